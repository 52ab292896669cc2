"""Property: any small netCDF file prepare() is given either loads into sane arrays or fails with the project's
own UserInputError (one line for the CLI), never with another exception.

Files vary in dims order, coordinate names, latitude order, longitude convention, levels, NaN patterns,
calendar, time step and on-disk format; most are valid, some are not (all-NaN or constant channels, short files).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_io import DataConfig, PreparedData, UserInputError, prepare


@st.composite
def datasets(draw) -> tuple[xr.Dataset, dict]:
    n_time = draw(st.sampled_from([5, 9, *range(36, 61, 4)]))  # a few too short for a window
    n_lat, n_lon = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    step = draw(st.sampled_from([2.5, 5.0, 10.0]))
    lat = draw(st.floats(-80, 80 - step * n_lat)) + step * np.arange(n_lat)
    if draw(st.booleans()):
        lat = lat[::-1]  # north to south, as ERA5 stores it
    signed = draw(st.booleans())
    lo = draw(st.floats(-180.0, 180.0 - step * n_lon) if signed else st.floats(0.0, 360.0 - step * n_lon))
    lon = lo + step * np.arange(n_lon)
    calendar = draw(st.sampled_from(["standard", "noleap", "360_day"]))
    freq = draw(st.sampled_from(["6h", "D"]))
    if calendar == "standard" and draw(st.booleans()):
        time = pd.date_range("1999-12-30", periods=n_time, freq=freq)
    else:
        time = xr.date_range("2001-02-27", periods=n_time, freq=freq, calendar=calendar, use_cftime=True)
    names = {"time": "time", "lat": draw(st.sampled_from(["lat", "latitude"])),
             "lon": draw(st.sampled_from(["lon", "longitude"])), "level": draw(st.sampled_from(["level", "plev"]))}
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    variables = {}
    level_counts = {"t2m": 0, "z": draw(st.integers(0, 3)), "precipitation": draw(st.sampled_from([0, 0, 1]))}
    for name, levels in level_counts.items():
        dims = ["time", "lat", "lon"] + (["level"] if levels else [])
        order = draw(st.permutations(dims))
        shape = [{"time": n_time, "lat": n_lat, "lon": n_lon, "level": levels}[d] for d in order]
        values = rng.standard_normal(shape).astype(draw(st.sampled_from(["float32", "float64"])))
        pattern = draw(st.sampled_from(["none"] * 4 + ["cells", "steps", "column"] * 2 + ["all", "constant"]))
        if pattern == "cells":
            values[rng.random(shape) < 0.3] = np.nan
        elif pattern == "steps":
            values[(slice(None),) * order.index("time") + (rng.random(n_time) < 0.3,)] = np.nan
        elif pattern == "column":
            values[(slice(None),) * order.index("lat") + (0,)] = np.nan
        elif pattern == "all":
            values[:] = np.nan
        elif pattern == "constant":
            values[:] = 3.0
        variables[name] = ([names[d] for d in order], values)
    coords = {names["time"]: time, names["lat"]: lat, names["lon"]: lon}
    if any(names["level"] in dims for dims, _ in variables.values()):
        n_levels = max(v.shape[d.index(names["level"])] for d, v in variables.values() if names["level"] in d)
        coords[names["level"]] = [1000.0, 850.0, 500.0][:n_levels]
        for key, (dims, values) in variables.items():  # every leveled variable on the same level axis
            if names["level"] in dims and values.shape[dims.index(names["level"])] != n_levels:
                variables[key] = ([d for d in dims if d != names["level"]], values.take(0, dims.index(names["level"])))
    options = {"format": draw(st.sampled_from(["NETCDF4", "NETCDF4", "NETCDF3_64BIT"])),
               "window_size": draw(st.integers(1, 3)), "forecast_steps": draw(st.integers(1, 2)),
               "train_ratio": 0.6, "val_ratio": 0.25}
    return xr.Dataset(variables, coords=coords), options


def check_sane(d: PreparedData, ds: xr.Dataset) -> None:
    t, c, h, w = d.inputs.shape
    assert t == ds.sizes["time"] and d.targets.shape[0] == t
    assert d.inputs.dtype == np.float32 and np.isfinite(d.inputs).all()
    assert (h, w) == (len(d.lat), len(d.lon)) and c == len(d.channels)
    assert np.all(np.diff(d.lat) > 0), "latitudes ascend"
    assert np.isfinite(d.input_stats.std).all() and (d.input_stats.std > 0).all()
    assert d.splits["train"][0] == 0 and d.splits["test"][1] == t


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=datasets())
def test_any_small_file_loads_or_fails_with_a_user_input_error(case):
    ds, options = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random.nc"
        ds.to_netcdf(path, format=options.pop("format"), engine="netcdf4")
        try:
            d = prepare(DataConfig(data=str(path), **options))
        except UserInputError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc), str(exc)
            return
        check_sane(d, ds)
