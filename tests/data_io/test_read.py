"""The names and rules read.py owns: channel names, a file's time step."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from data_io import DataError, channel_name, time_step, variable_of


def test_channel_names_round_trip_to_their_variable():
    assert channel_name("TEM", 850.0) == "TEM@850" and channel_name("TEM", 92.5) == "TEM@92.5"
    assert channel_name("z", 3) == "z@3" and channel_name("precipitation") == "precipitation"
    assert variable_of("TEM@850") == "TEM" and variable_of("precipitation") == "precipitation"


def test_the_time_step_is_the_most_common_spacing():
    times = pd.date_range("2020-01-01", periods=10, freq="6h").values
    gappy = np.concatenate([times[:3], times[5:]])  # two steps missing: one 18 h gap among 6 h steps
    assert time_step(gappy) == np.timedelta64(6, "h")
    tie = np.array(["2020-01-01T00", "2020-01-01T06", "2020-01-01T18"], dtype="datetime64[ns]")
    assert time_step(tie) == np.timedelta64(6, "h")  # a tie: the smaller spacing


@pytest.mark.parametrize("calendar", ["noleap", "360_day"])
def test_cftime_dates_give_a_numpy_timedelta(calendar):
    times = xr.date_range("2001-02-27", periods=5, freq="D", calendar=calendar, use_cftime=True).values
    step = time_step(times)
    assert isinstance(step, np.timedelta64) and step == np.timedelta64(1, "D")


def test_a_single_time_step_is_refused_naming_the_source():
    with pytest.raises(DataError, match="--data f.nc: has a single time step"):
        time_step(pd.date_range("2020-01-01", periods=1).values, "--data f.nc")
