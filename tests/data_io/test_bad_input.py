"""Bad data files and data flags: one line on stderr naming the file or flag and the fix, exit 2, no traceback.

Each file is written to disk as users would meet it and run through the training CLI in-process.
"""

from __future__ import annotations

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from data_io import DataConfig, prepare
from tests.conftest import generic_dataset
from tests.data_io._hdf5 import write_plain_hdf5

FAST = ["--num-epochs", "1", "--num-workers", "0", "--hidden-channels", "4", "--window-size", "3"]


def _truncated(path, fraction: float = 0.6):
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * fraction)])
    return path


def _edited(edit):
    def build(tmp_path):
        ds = generic_dataset().copy(deep=True)
        ds = edit(ds) or ds
        path = tmp_path / "bad.nc"
        ds.to_netcdf(path, engine="netcdf4")
        return path

    return build


def _empty(tmp_path):
    path = tmp_path / "bad.nc"
    path.write_bytes(b"")
    return path


def _truncated_netcdf(fmt):
    def build(tmp_path):
        path = tmp_path / "bad.nc"
        generic_dataset().to_netcdf(path, format=fmt)
        return _truncated(path)

    return build


def _plain_hdf5(tmp_path):
    path = write_plain_hdf5(tmp_path / "bad.nc", np.ones((48, 9, 18)))
    if path is None:
        pytest.skip("no libhdf5 next to netCDF4 to write a plain HDF5 file with")
    return path


def _groups_only(tmp_path):
    path = tmp_path / "bad.nc"
    with netCDF4.Dataset(path, "w") as nc:
        group = nc.createGroup("forecast")
        group.createDimension("time", 3)
        group.createVariable("t2m", "f4", ("time",))[:] = [1.0, 2.0, 3.0]
    return path


def _curvilinear(ds):
    """A 2-D (projected-grid) latitude with a hole: such grids are read natively, but every cell needs a centre."""
    y, x = np.arange(9.0), np.arange(18.0)
    lat = 20 + y[:, None] + 0.1 * x
    lat[4, 7] = np.nan
    return xr.Dataset(
        {"t2m": (("time", "y", "x"), ds["t2m"].values)},
        coords={"time": ds["time"], "lat": (("y", "x"), lat), "lon": (("y", "x"), x + 0.1 * y[:, None])},
    )


def _set(name, index, value):
    def edit(ds):
        ds[name].values[index] = value

    return edit


def _other_grid(ds):
    ds["q"] = (("time", "lat2", "lon2"), np.random.default_rng(0).random((48, 4, 9)).astype("float32"))


CASES = {
    # name: (build(tmp_path) -> path, extra flags, phrases the line must hold besides the file name)
    "empty-file": (_empty, [], ["--data", "the file is empty"]),
    "truncated-netcdf4": (_truncated_netcdf("NETCDF4"), [], ["--data", "not a readable netCDF file"]),
    "truncated-netcdf3": (_truncated_netcdf("NETCDF3_64BIT"), [],
                          ["--data", "the file is truncated", "download it again"]),
    "plain-hdf5": (_plain_hdf5, [], ["a plain HDF5 file, not netCDF", "write it as netCDF with named"]),
    "netcdf4-groups-only": (_groups_only, [], ["no variables at the file's root", "netCDF4 groups"]),
    "duplicate-time-stamps": (_edited(lambda ds: ds.isel(time=[0, 1, 1, *range(2, 48)])), [],
                              ["duplicate time stamps", "remove the repeated steps"]),
    "numeric-time-without-units": (_edited(lambda ds: ds.assign_coords(time=np.arange(48.0))), [],
                                   ["without CF units", "add a units attribute"]),
    "constant-variable": (_edited(_set("t2m", slice(None), 280.0)), [],
                          ["channel t2m is constant", "(std 0)", "drop it with --variables"]),
    "inf-values": (_edited(_set("t2m", (5, 2, 3), np.inf)), [],
                   ["variable t2m has inf values", "replace them with NaN"]),
    "minus-inf-target": (_edited(_set("z", (5, 0, 2, 3), -np.inf)), ["--target", "z"], ["variable z has inf values"]),
    "all-nan-input": (_edited(_set("t2m", slice(None), np.nan)), ["--target", "z"],
                      ["channel t2m is NaN everywhere", "drop it with --variables"]),
    "curvilinear-nan-lat": (_edited(_curvilinear), [], ["coordinate 'lat' has 1 cell(s) that are not finite",
                                                        "fix the grid's coordinate values"]),
    "level-without-values": (_edited(lambda ds: ds.drop_vars("plev")), [],
                             ["variable z has a 'level' dimension without coordinate values", "add the level values"]),
    "variable-on-another-grid": (_edited(_other_grid), [],
                                 ["q ('time', 'lat2', 'lon2') not on the (time, [level,] lat, lon) grid of t2m, z",
                                  "regrid", "--variables"]),
    "asked-variable-on-another-grid": (_edited(_other_grid), ["--variables", "q"],
                                       ["q ('time', 'lat2', 'lon2') not on"]),
    "nan-latitude": (_edited(lambda ds: ds.assign_coords(lat=[np.nan, *ds.lat.values[1:]])), [],
                     ["coordinate 'lat' must hold distinct finite numbers", "1 NaN/inf"]),
    "repeated-longitude": (_edited(lambda ds: ds.rename(lon="longitude").assign_coords(
                               longitude=[0.0, *range(0, 340, 20)])), [],
                           ["coordinate 'longitude' must hold distinct finite numbers", "repeated values [0.0]"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_data_file_is_one_line_naming_the_file_and_exit_2(run_main, tmp_path, case):
    build, flags, phrases = CASES[case]
    path = build(tmp_path)
    code, _, err = run_main(["--data", path, "--output-dir", tmp_path / "run", *FAST, *flags])
    assert code == 2, err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("train_convlstm.py: error: ") and str(path) in line, line
    for phrase in phrases:
        assert phrase in line, (phrase, line)


@pytest.mark.parametrize(
    ("flags", "phrases"),
    [
        (["--window-size", "40"], ["the train split has 34 time steps but one window needs 41", "--window-size"]),
        (["--forecast-steps", "0"], ["--forecast-steps must be at least 1, but got 0"]),
        (["--train-ratio", "0.9", "--val-ratio", "0.2"],
         ["--train-ratio 0.9 and --val-ratio 0.2", "sum to less than 1"]),
        (["--test-start-date", "March"], ["--test-start-date 'March': not a date", "YYYY-MM-DD"]),
        (["--test-start-date", "1990-01-01"], ["--test-start-date 1990-01-01: outside the file's time range"]),
    ],
    ids=["window-larger-than-split", "forecast-steps", "ratios", "date-not-a-date", "date-outside"],
)
def test_bad_data_flag_is_one_line_naming_the_flag_and_exit_2(run_main, write_nc, tmp_path, flags, phrases):
    path = write_nc(generic_dataset(), "good.nc")
    code, _, err = run_main(["--data", path, "--output-dir", tmp_path / "run", *FAST, *flags])
    assert code == 2 and "Traceback" not in err, err
    (line,) = err.strip().splitlines()
    for phrase in phrases:
        assert phrase in line, (phrase, line)


def test_data_folder_without_netcdf_files_is_one_line(run_main, tmp_path):
    (tmp_path / "notes.txt").write_text("not data")
    code, _, err = run_main(["--data", tmp_path, "--output-dir", tmp_path / "run", *FAST])
    assert code == 2 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert f"--data {tmp_path}: a folder without netCDF (*.nc) files and not a Zarr store" in line


# ---- odd but valid files load ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["NETCDF3_CLASSIC", "NETCDF3_64BIT", "NETCDF3_64BIT_DATA"])
@pytest.mark.parametrize("unlimited", [[], ["time"]])
def test_whole_classic_netcdf_files_are_not_taken_for_truncated(write_nc, tmp_path, fmt, unlimited):
    ds = generic_dataset()
    ds["station_height"] = ("lat", np.arange(9, dtype="int16"))  # a 2-byte variable: padding in the layout
    path = tmp_path / "classic.nc"
    ds.to_netcdf(path, format=fmt, unlimited_dims=unlimited, engine="netcdf4")
    d = prepare(DataConfig(data=str(path), window_size=3))
    assert d.channels == ["t2m", "z@850", "z@500"]


def test_global_grid_storing_both_minus_180_and_180_keeps_one_column(write_nc):
    lon = np.arange(-180.0, 180.0 + 1e-6, 20.0)  # 19 columns, the first and last the same meridian
    d = prepare(DataConfig(data=str(write_nc(generic_dataset(lon=lon), "both_ends.nc")), window_size=3))
    assert d.grid_shape[1] == 18
    assert len(np.unique(d.lon)) == 18


def test_variable_without_levels_among_variables_with_levels_loads(write_nc):
    ds = generic_dataset()
    ds["rh"] = (("time", "level2", "lat", "lon"), np.random.default_rng(0).random((48, 1, 9, 18)).astype("float32"))
    ds = ds.assign_coords(level2=[700.0])
    d = prepare(DataConfig(data=str(write_nc(ds, "levels.nc")), window_size=3))
    assert d.channels == ["t2m", "z@850", "z@500", "rh@700"]
    assert pd.Index(d.channels).is_unique
