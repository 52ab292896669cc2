"""The on-disk cache: streamed in time chunks, identical to the in-memory arrays, reused, and pickled by path."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from data_io import ConfigError, DataConfig, DataError, ensure_local, prepare
from data_io import cache as cache_mod
from data_io import pipeline
from data_io._stream import time_chunks
from data_io.normalize import ChannelMoments

ARRAYS = ("inputs", "targets", "upstream")


@pytest.fixture(autouse=True)
def no_cache_env(monkeypatch):
    monkeypatch.delenv("CONVLSTM_TUNE_CACHE", raising=False)


@pytest.fixture
def tiny_chunks(monkeypatch):
    """A few time steps per chunk, so that every file in these tests is read in many chunks."""
    monkeypatch.setattr(pipeline, "CHUNK_BYTES", 20_000)


@pytest.fixture
def gappy_file(write_nc, small_demo):
    """The small demo with NaNs in inputs and target and its time steps stored out of order."""
    ds = small_demo.copy(deep=True)
    ds["TEM"][5:9, 1, 3:6, :] = np.nan
    ds["precipitation"][40:44, :, 22:25] = np.nan
    order = np.random.default_rng(0).permutation(ds.sizes["time"])
    return write_nc(ds.isel(time=order), "gappy.nc")


def assert_same(a, b, exact_stats=False):
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5, err_msg=name)
            np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=name)
    for stats in ("input_stats", "target_stats"):
        s, t = getattr(a, stats), getattr(b, stats)
        assert s.channels == t.channels
        np.testing.assert_allclose(s.mean, t.mean, rtol=0 if exact_stats else 1e-12, atol=1e-12)
        np.testing.assert_allclose(s.std, t.std, rtol=0 if exact_stats else 1e-12)
        np.testing.assert_array_equal(s.log, t.log)
    assert a.splits == b.splits and a.channels == b.channels and a.levels == b.levels
    np.testing.assert_array_equal(a.times, b.times)
    for coord in ("lat", "lon", "upstream_lat", "upstream_lon"):
        np.testing.assert_array_equal(getattr(a, coord), getattr(b, coord))
    assert a.target_attrs == b.target_attrs and a.lon_signed == b.lon_signed


@pytest.mark.parametrize("upstream", [False, True], ids=["downstream", "upstream"])
def test_cached_arrays_equal_the_in_memory_ones(gappy_file, tiny_chunks, upstream):
    in_memory = prepare(DataConfig(data=str(gappy_file), include_upstream=upstream))
    cached = prepare(DataConfig(data=str(gappy_file), include_upstream=upstream, cache_threshold_mb=0))
    assert isinstance(cached.inputs, np.memmap) and not isinstance(in_memory.inputs, np.memmap)
    assert cached.cache_dir and os.path.dirname(cached.cache_dir) == str(gappy_file.parent / ".convlstm-cache")
    assert_same(cached, in_memory)


def test_a_second_prepare_maps_the_cache_without_opening_the_file(demo_file, monkeypatch):
    cfg = DataConfig(data=str(demo_file), cache_threshold_mb=0)
    first = prepare(cfg)

    def refuse(path):
        raise AssertionError("the netCDF file was opened again")

    monkeypatch.setattr(pipeline, "open_dataset", refuse)
    again = prepare(DataConfig(data=str(demo_file), cache_threshold_mb=0, window_size=4))
    assert again.cache_dir == first.cache_dir and again.config.window_size == 4
    assert isinstance(again.inputs, np.memmap) and not again.inputs.flags.writeable
    assert_same(again, first, exact_stats=True)


def test_small_files_stay_in_memory_by_default(demo_file):
    data = prepare(DataConfig(data=str(demo_file)))
    assert data.cache_dir is None and not isinstance(data.inputs, np.memmap)
    assert not (demo_file.parent / ".convlstm-cache").exists()


def test_cache_key_follows_the_file_and_the_fields_that_shape_the_arrays(demo_file, tmp_path, monkeypatch):
    base = DataConfig(data=str(demo_file))
    entry = cache_mod.entry_dir(base, None)
    same = [DataConfig(data=str(demo_file), window_size=3, forecast_steps=2, cache_threshold_mb=7)]
    differ = [DataConfig(data=str(demo_file), variables=["TEM"]), DataConfig(data=str(demo_file), train_ratio=0.6),
              DataConfig(data=str(demo_file), include_upstream=True)]
    assert all(cache_mod.entry_dir(c, None) == entry for c in same)
    assert len({cache_mod.entry_dir(c, None) for c in differ} | {entry}) == 4
    os.utime(demo_file, ns=(0, os.stat(demo_file).st_mtime_ns + 10**9))  # the file changed
    assert cache_mod.entry_dir(base, None) != entry
    elsewhere = DataConfig(data=str(demo_file), cache_dir=str(tmp_path / "c"))
    assert cache_mod.entry_dir(elsewhere, None).parent == tmp_path / "c"
    monkeypatch.setenv("CONVLSTM_TUNE_CACHE", str(tmp_path / "env"))
    assert cache_mod.entry_dir(base, None).parent == tmp_path / "env"


def test_a_pickle_names_the_cache_instead_of_copying_it(demo_file):
    data = prepare(DataConfig(data=str(demo_file), include_upstream=True, cache_threshold_mb=0))
    buffers = []
    payload = pickle.dumps(data, protocol=5, buffer_callback=buffers.append)  # as Ray's object store pickles
    array_bytes = sum(getattr(data, name).nbytes for name in ARRAYS)
    shipped = len(payload) + sum(memoryview(b).nbytes for b in buffers)
    assert shipped < 0.2 * array_bytes, (shipped, array_bytes)
    back = pickle.loads(payload, buffers=buffers)
    assert all(isinstance(getattr(back, name), np.memmap) for name in ARRAYS)
    assert_same(back, data, exact_stats=True)


def test_unpickling_only_maps_files_and_ensure_local_rebuilds_with_a_log_line(demo_file, monkeypatch, caplog):
    data = prepare(DataConfig(data=str(demo_file), cache_threshold_mb=0))
    payload = pickle.dumps(data)
    shutil.move(data.cache_dir, str(demo_file.parent / "moved"))  # as on a node that never had it

    def refuse(path):
        raise AssertionError("unpickling opened the netCDF file")

    monkeypatch.setattr(pipeline, "open_dataset", refuse)
    back = pickle.loads(payload)
    assert back.inputs is None and "inputs.npy is missing" in back.not_local
    monkeypatch.undo()
    with caplog.at_level(logging.WARNING, logger="data_io.pipeline"):
        assert ensure_local(back) is back
    assert any("Rebuilding" in r.message and "inputs.npy is missing" in r.message for r in caplog.records)
    assert back.not_local is None and os.path.isdir(back.cache_dir) and isinstance(back.inputs, np.memmap)
    assert_same(back, data, exact_stats=True)


def test_ensure_local_rebuilds_with_the_given_statistics(gappy_file):
    fitted = prepare(DataConfig(data=str(gappy_file)))
    data = prepare(DataConfig(data=str(gappy_file), cache_threshold_mb=0), stats=(fitted.input_stats,
                                                                                   fitted.target_stats))
    assert data.stats_given and not fitted.stats_given
    payload = pickle.dumps(data)
    shutil.rmtree(data.cache_dir)
    back = ensure_local(pickle.loads(payload))
    assert back.stats_given and back.splits["train"] == (0, 0)
    assert_same(back, data, exact_stats=True)


class _CreatesFile:
    """Unpickled, this would create a file: proof that a cache entry's contents are never unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _save_as(path, arr, **kwargs):
    """A new file under the old name: the arrays already mapped from the old one stay readable."""
    tmp = path.with_name("tmp-" + path.name)
    np.save(tmp, arr, **kwargs)
    os.replace(tmp, path)


def _tamper(entry, how, marker):
    if how == "bad json":
        (entry / "meta.json").write_text('{"identity": ')
    elif how == "json of another entry":
        meta = json.loads((entry / "meta.json").read_text())
        meta["identity"]["files"][0][1] += 1  # the size of the (only) file
        (entry / "meta.json").write_text(json.dumps(meta))
    elif how == "wrong shape":
        _save_as(entry / "inputs.npy", np.zeros((3, 1, 2, 2), dtype=np.float32))
    elif how == "wrong dtype":
        _save_as(entry / "targets.npy", np.load(entry / "targets.npy").astype(np.float64))
    elif how == "missing array":
        os.remove(entry / "targets.npy")
    elif how == "old pickle meta":
        os.remove(entry / "meta.json")
        (entry / "meta.pkl").write_bytes(pickle.dumps({"arrays": ["inputs"], "x": _CreatesFile(marker)}))
    elif how == "pickled npy":
        _save_as(entry / "inputs.npy", np.array([_CreatesFile(marker)], dtype=object), allow_pickle=True)


@pytest.mark.parametrize("how", ["bad json", "json of another entry", "wrong shape", "wrong dtype", "missing array",
                                 "old pickle meta", "pickled npy"])
def test_a_tampered_entry_is_rebuilt_with_a_log_line_and_never_unpickled(demo_file, tmp_path, caplog, how):
    cfg = DataConfig(data=str(demo_file), cache_threshold_mb=0)
    first = prepare(cfg)
    marker = tmp_path / "payload-ran"
    _tamper(Path(first.cache_dir), how, marker)
    with caplog.at_level(logging.WARNING, logger="data_io.cache"):
        again = prepare(cfg)
    assert not marker.exists()
    assert [r for r in caplog.records if "is not usable" in r.message and first.cache_dir in r.message]
    assert again.cache_dir == first.cache_dir and isinstance(again.inputs, np.memmap)
    assert_same(again, first, exact_stats=True)
    assert not (Path(again.cache_dir) / "meta.pkl").exists()


def test_unpickling_maps_nothing_from_a_tampered_entry(demo_file, tmp_path):
    data = prepare(DataConfig(data=str(demo_file), cache_threshold_mb=0))
    marker = tmp_path / "payload-ran"
    _tamper(Path(data.cache_dir), "pickled npy", marker)
    back = pickle.loads(pickle.dumps(data))
    assert back.inputs is None and "not a readable .npy array" in back.not_local and not marker.exists()


def test_statistics_passed_in_normalise_the_whole_file(gappy_file, tiny_chunks):
    fitted = prepare(DataConfig(data=str(gappy_file)))
    stats = (fitted.input_stats, fitted.target_stats)
    in_memory = prepare(DataConfig(data=str(gappy_file)), stats=stats)
    cached = prepare(DataConfig(data=str(gappy_file), cache_threshold_mb=0), stats=stats)
    assert cached.splits["test"] == (0, len(cached.times)) and cached.cache_dir != fitted.cache_dir
    assert_same(cached, in_memory, exact_stats=True)


@pytest.mark.parametrize("problem", ["target all NaN", "constant channel"])
def test_unusable_data_gives_the_in_memory_error(write_nc, small_demo, problem, tiny_chunks):
    ds = small_demo.copy(deep=True)
    if problem == "target all NaN":
        ds["precipitation"][:] = np.nan
    else:
        ds["U"][:, 0] = 3.0
    path = write_nc(ds, "bad.nc")
    with pytest.raises(DataError) as in_memory:
        prepare(DataConfig(data=str(path)))
    with pytest.raises(DataError) as cached:
        prepare(DataConfig(data=str(path), cache_threshold_mb=0))
    assert str(cached.value) == str(in_memory.value)
    assert not any(p.name.startswith("bad-") for p in (path.parent / ".convlstm-cache").iterdir())  # nothing half-built


def test_negative_threshold_is_refused(demo_file):
    with pytest.raises(ConfigError, match="--cache-threshold-mb must be 0 or more"):
        prepare(DataConfig(data=str(demo_file), cache_threshold_mb=-1))


def test_channel_moments_over_chunks_match_nanmean_and_nanstd():
    rng = np.random.default_rng(1)
    x = rng.gamma(0.5, 3.0, size=(37, 3, 4, 5)) * np.array([1.0, 1e4, 1.0])[None, :, None, None]
    x[3:5, 0] = np.nan
    x[:, 2, 0, 0] = np.nan
    log = [True, False, False]
    moments = ChannelMoments(log)
    for t0, t1 in time_chunks(37, step_bytes=1, budget_bytes=6):
        moments.update(x[t0:t1].astype(np.float32))
    x32 = x.astype(np.float32).astype(np.float64)
    for c, (mean, std) in enumerate(moments.results()):
        ref = np.log1p(np.clip(x32[:, c], 0, None)) if log[c] else x32[:, c]
        assert mean == pytest.approx(np.nanmean(ref), rel=1e-12)
        assert std == pytest.approx(np.nanstd(ref), rel=1e-10)
