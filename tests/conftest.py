"""Fixtures shared by every test package: small netCDF files on disk and ways to run the CLI."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from data_io.demo import make_demo

ROOT = Path(__file__).resolve().parents[1]

# The tests' tensors are tiny: intra-op threads gain nothing, and on a busy 2-core machine OpenMP threads
# waiting on each other make every training step an order of magnitude slower.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def small_demo() -> xr.Dataset:
    """The reference schema on a 5-degree grid, 60 days 12-hourly (120 steps): 3 levels x 5 variables + rain."""
    return make_demo(seed=0, days=60, resolution=5.0)


def generic_dataset(
    n_time: int = 48, lat: np.ndarray | None = None, lon: np.ndarray | None = None, seed: int = 0
) -> xr.Dataset:
    """A non-reference file: `t2m (time, lat, lon)` and `z (time, plev, lat, lon)`, no precipitation.

    Values depend only on (time, lat, lon mod 360), so the same cells carry the same numbers whatever the
    longitude convention of the file.
    """
    lat = np.arange(-20.0, 60.0 + 1e-6, 10.0) if lat is None else lat
    lon = np.arange(0.0, 360.0, 20.0) if lon is None else lon
    rng = np.random.default_rng(seed)
    t = np.arange(n_time)[:, None, None]
    la = lat[None, :, None]
    lo = np.mod(lon, 360.0)[None, None, :]
    t2m = 280.0 + 10 * np.cos(np.deg2rad(la)) + 3 * np.sin(np.deg2rad(lo) + 0.3 * t)
    t2m = t2m + 0.1 * rng.standard_normal((n_time, 1, 1))
    z = np.stack([5000.0 + 50 * t2m / 280.0 * p for p in (1.0, 2.0)], axis=1)
    return xr.Dataset(
        {
            "t2m": (("time", "lat", "lon"), t2m.astype("float32")),
            "z": (("time", "plev", "lat", "lon"), z.astype("float32")),
        },
        coords={
            "time": pd.date_range("2001-01-01", periods=n_time, freq="6h"),
            "plev": [850.0, 500.0],
            "lat": lat,
            "lon": lon,
        },
    )


@pytest.fixture
def write_nc(tmp_path: Path) -> Callable[..., Path]:
    """Factory: write a Dataset with netCDF4 to tmp_path/name and return the path."""

    def write(ds: xr.Dataset, name: str = "data.nc") -> Path:
        path = tmp_path / name
        ds.to_netcdf(path, engine="netcdf4")
        return path

    return write


@pytest.fixture
def demo_file(write_nc, small_demo) -> Path:
    return write_nc(small_demo, "demo.nc")


@contextlib.contextmanager
def restored_logging():
    """The CLIs point the root logger at stdout (the search also at a search.log); put the handlers back afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in saved[0]:
                handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def train_in_process(argv: list) -> tuple[int, str, str]:
    """`python -m model.train ARGV` in this process (no new interpreter to import torch again); returns
    (exit code, stdout, stderr)."""
    import model.train

    out, err = io.StringIO(), io.StringIO()
    with (restored_logging(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err),
          pytest.raises(SystemExit) as done):
        model.train.main([str(a) for a in argv], prog="train_convlstm.py")
    return done.value.code, out.getvalue(), err.getvalue()


@pytest.fixture
def run_main() -> Callable[[list], tuple[int, str, str]]:
    """Run `model.train.main(argv)` in-process; returns (exit code, stdout, stderr)."""
    return train_in_process


@pytest.fixture
def run_script() -> Callable[..., subprocess.CompletedProcess]:
    """`python train_convlstm.py ARGS` in a fresh process, with no GPU visible, as a user types it."""

    def run(*args, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        return subprocess.run(
            [sys.executable, "train_convlstm.py", *map(str, args)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
        )

    return run


# Under `pytest -n 2 --dist loadgroup` (the README's test command) each xdist worker builds its own session
# fixtures. These searches are the expensive ones: every file that uses one runs on the same worker, so each is
# built once; other files are kept whole on one worker too, for their module fixtures.
SHARED_SESSION_FIXTURES = ("experiment", "oom_search")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups into the test ids
def pytest_collection_modifyitems(config, items) -> None:
    files: dict[str, set[str]] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::")[0], set()).update(
            f for f in SHARED_SESSION_FIXTURES if f in item.fixturenames)
    group = {path: path for path in files}
    for fixture in SHARED_SESSION_FIXTURES:  # the groups of a fixture's users become one
        merged = {group[path] for path, used in files.items() if fixture in used}
        for path, g in group.items():
            if g in merged:
                group[path] = min(merged)
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group[item.nodeid.split("::")[0]]))
