"""--data as users have it: several files, a glob, a folder, a Zarr store, ERA5 files split by variable and time.

Every form must give exactly the arrays the same data gives as one file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from data_io import DataConfig, DataError, prepare, sources
from data_io.cache import entry_dir
from tests.conftest import generic_dataset, train_in_process

SMALL = dict(window_size=2, cache_threshold_mb=1000.0)


def _same_arrays(a, b) -> None:
    np.testing.assert_array_equal(a.inputs, b.inputs)
    np.testing.assert_array_equal(a.targets, b.targets)
    np.testing.assert_array_equal(a.times, b.times)
    assert a.channels == b.channels and a.splits == b.splits


@pytest.fixture
def whole(tmp_path) -> tuple[xr.Dataset, Path]:
    ds = generic_dataset(n_time=48)
    path = tmp_path / "whole" / "all.nc"
    path.parent.mkdir()
    ds.to_netcdf(path)
    return ds, path


def _split_in_time(ds: xr.Dataset, folder: Path, parts: int = 3) -> list[Path]:
    folder.mkdir(exist_ok=True)
    edges = np.linspace(0, ds.sizes["time"], parts + 1).astype(int)
    paths = []
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        paths.append(folder / f"part{i}.nc")
        ds.isel(time=slice(a, b)).to_netcdf(paths[-1])
    return paths


def test_a_list_of_time_split_files_equals_the_whole_file(whole, tmp_path):
    ds, one = whole
    paths = _split_in_time(ds, tmp_path / "parts")
    reference = prepare(DataConfig(data=str(one), **SMALL))
    shuffled = [str(paths[2]), str(paths[0]), str(paths[1])]  # the order given does not matter: time does
    _same_arrays(prepare(DataConfig(data=shuffled, **SMALL)), reference)


def test_a_glob_and_a_folder_equal_the_whole_file(whole, tmp_path):
    ds, one = whole
    _split_in_time(ds, tmp_path / "parts", parts=4)
    reference = prepare(DataConfig(data=str(one), **SMALL))
    assert len(sources(str(tmp_path / "parts" / "part*.nc"))) == 4
    _same_arrays(prepare(DataConfig(data=str(tmp_path / "parts" / "part*.nc"), **SMALL)), reference)
    _same_arrays(prepare(DataConfig(data=str(tmp_path / "parts"), **SMALL)), reference)


def test_a_zarr_store_equals_the_whole_file(whole, tmp_path):
    ds, one = whole
    store = tmp_path / "data.zarr"
    ds.chunk({"time": 10}).to_zarr(store)
    assert sources(str(store)) == [store.resolve()]
    reference = prepare(DataConfig(data=str(one), **SMALL))
    _same_arrays(prepare(DataConfig(data=str(store), **SMALL)), reference)


def _era5(ds: xr.Dataset) -> tuple[xr.Dataset, xr.Dataset]:
    """The current CDS download layout: a single-level and a pressure-level file, valid_time/pressure_level."""
    names = {"time": "valid_time", "lat": "latitude", "lon": "longitude"}
    single = ds[["t2m"]].rename(names)
    single["expver"] = ("valid_time", np.array(["0001"] * ds.sizes["time"]))  # ERA5's text variable per step
    pressure = ds[["z"]].rename({**names, "plev": "pressure_level"})
    return single, pressure


def test_era5_files_split_by_variable_and_by_time_are_merged(whole, tmp_path):
    ds, one = whole
    folder = tmp_path / "era5"
    folder.mkdir()
    for month, rows in (("01", slice(0, 24)), ("02", slice(24, 48))):
        single, pressure = _era5(ds.isel(time=rows))
        single.to_netcdf(folder / f"era5_single_2001{month}.nc")
        pressure.to_netcdf(folder / f"era5_pressure_2001{month}.nc")
    # Without --variables the channels come in the files' order (pressure-level file first here).
    reference = prepare(DataConfig(data=str(one), variables=["t2m", "z"], **SMALL))
    merged = prepare(DataConfig(data=str(folder / "era5_*.nc"), variables=["t2m", "z"], **SMALL))
    _same_arrays(merged, reference)
    assert merged.channels == ["t2m", "z@850", "z@500"]


def test_an_overlap_with_equal_values_is_read_once(whole, tmp_path):
    ds, one = whole
    folder = tmp_path / "overlap"
    folder.mkdir()
    ds.isel(time=slice(0, 30)).to_netcdf(folder / "a.nc")
    ds.isel(time=slice(25, 48)).to_netcdf(folder / "b.nc")  # 5 steps in both files
    _same_arrays(prepare(DataConfig(data=str(folder), **SMALL)), prepare(DataConfig(data=str(one), **SMALL)))


def test_an_overlap_with_different_values_names_both_files(whole, tmp_path):
    ds, _ = whole
    folder = tmp_path / "conflict"
    folder.mkdir()
    ds.isel(time=slice(0, 30)).to_netcdf(folder / "a.nc")
    later = ds.isel(time=slice(28, 48)).copy(deep=True)
    later["t2m"][1] += 1.0  # step 29 differs
    later.to_netcdf(folder / "b.nc")
    with pytest.raises(DataError, match=r"a\.nc and .*b\.nc both hold 2 time step\(s\) .* different values of t2m"):
        prepare(DataConfig(data=str(folder), **SMALL))


def test_files_on_different_grids_name_both_files(tmp_path):
    generic_dataset(n_time=24).to_netcdf(tmp_path / "a.nc")
    other = generic_dataset(n_time=24, lat=np.arange(-20.0, 60.0 + 1e-6, 5.0))
    other["time"] = other["time"].values + np.timedelta64(6 * 24, "h")
    other.to_netcdf(tmp_path / "b.nc")
    with pytest.raises(DataError, match=r"a\.nc and .*b\.nc are on different grids \(lat -20\.\.60, 9 points vs"):
        prepare(DataConfig(data=[str(tmp_path / "a.nc"), str(tmp_path / "b.nc")], **SMALL))


def test_variable_groups_over_different_times_are_refused(whole, tmp_path):
    ds, _ = whole
    ds[["t2m"]].to_netcdf(tmp_path / "single.nc")
    ds[["z"]].isel(time=slice(0, 40)).to_netcdf(tmp_path / "pressure.nc")
    with pytest.raises(DataError, match="different variables over different time steps"):
        prepare(DataConfig(data=str(tmp_path / "*.nc"), **SMALL))


def test_duplicate_steps_inside_one_of_many_files_are_refused_as_for_one_file(whole, tmp_path):
    ds, _ = whole
    ds.isel(time=slice(0, 24)).to_netcdf(tmp_path / "a.nc")
    ds.isel(time=[24, 25, 25, 26]).to_netcdf(tmp_path / "b.nc")
    with pytest.raises(DataError, match=r"b\.nc: duplicate time stamps"):
        prepare(DataConfig(data=str(tmp_path / "*.nc"), **SMALL))


@pytest.mark.parametrize("data, needle", [
    ("{tmp}/nothing*.nc", "the pattern matches no file"),
    ("{tmp}/missing.nc", "no such file or folder"),
    ("{tmp}/empty_dir", "a folder without netCDF"),
])
def test_data_that_names_nothing_is_one_line(tmp_path, data, needle):
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match=needle):
        prepare(DataConfig(data=data.format(tmp=tmp_path), **SMALL))


# ---- the cache key -------------------------------------------------------------------------------------------
def test_the_cache_key_covers_every_file(whole, tmp_path, caplog):
    ds, _ = whole
    folder = tmp_path / "parts"
    paths = _split_in_time(ds.isel(time=slice(0, 36)), folder)
    cfg = DataConfig(data=str(folder), window_size=2, cache_threshold_mb=0, cache_dir=str(tmp_path / "cache"))
    first = prepare(cfg)
    entry = entry_dir(cfg, None)
    assert first.cache_dir == str(entry)

    with caplog.at_level(logging.INFO, logger="data_io"):
        again = prepare(cfg)  # nothing touched: the same entry, mapped
    assert again.cache_dir == str(entry) and "Using the cached arrays" in caplog.text

    ds.isel(time=slice(36, 48)).to_netcdf(folder / "part3.nc")  # a new file in the folder
    assert entry_dir(cfg, None) != entry
    grown = prepare(cfg)
    assert len(grown.times) == 48 and grown.cache_dir != str(entry)

    entry = entry_dir(cfg, None)
    changed = ds.isel(time=slice(12, 24)).copy(deep=True)
    changed["t2m"] += 0.5
    changed.to_netcdf(paths[1])  # a changed file (size or mtime)
    os.utime(paths[1], ns=(os.stat(paths[1]).st_atime_ns, os.stat(paths[1]).st_mtime_ns + 10**9))
    assert entry_dir(cfg, None) != entry
    rebuilt = prepare(cfg)
    assert not np.array_equal(rebuilt.inputs[12:24], grown.inputs[12:24])


# ---- the flag ------------------------------------------------------------------------------------------------
def test_the_data_flag_takes_one_value_or_several(tmp_path):
    from model.config import config_from_args
    from model.train import parser

    one = config_from_args(parser().parse_args(["--data", "a.nc"]))
    assert one.data.data == "a.nc"
    many = config_from_args(parser().parse_args(["--data", "a.nc", "b.nc"]))
    assert many.data.data == ["a.nc", "b.nc"]
    (tmp_path / "c.yaml").write_text("data:\n  data: [x.nc, y.nc]\n")
    from_file = config_from_args(parser().parse_args(["--config", str(tmp_path / "c.yaml")]))
    assert from_file.data.data == ["x.nc", "y.nc"]


def test_train_end_to_end_on_a_glob_of_files(whole, tmp_path):
    ds, _ = whole
    _split_in_time(ds, tmp_path / "parts")
    out = tmp_path / "run"
    code, stdout, stderr = train_in_process([
        "--data", tmp_path / "parts" / "*.nc", "--output-dir", out, "--num-epochs", 1, "--num-workers", 0,
        "--hidden-channels", 4, "--window-size", 2, "--device", "cpu"])
    assert code == 0, stderr
    assert (out / "best.pt").is_file()
    assert "Combined 3 files" in stdout + stderr
