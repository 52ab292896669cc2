"""Gaps and irregular steps in time: windows that straddle one are dropped, with exact counts."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from data_io import DataConfig, DataError, prepare
from tests.conftest import generic_dataset
from tests.model.test_train import FAST, assert_one_line_error

# window 4 + offset 1 + 1 forecast step - 1: a window spans 5 steps, 4 spacings.
CFG = dict(window_size=4, cache_threshold_mb=1000.0)


def _with_gap_and_shift(shuffle: bool = False):
    ds = generic_dataset(n_time=48)
    ds = ds.isel(time=[i for i in range(48) if i != 20])  # a 12 h gap between 2001-01-05T18 and 2001-01-06T06
    times = ds["time"].values.copy()
    times[29] += np.timedelta64(1, "h")  # one stamp an hour late: spacings 7 h and 5 h around it
    ds = ds.assign_coords(time=times)
    if shuffle:
        ds = ds.isel(time=np.random.default_rng(0).permutation(47))
    return ds


@pytest.mark.parametrize("shuffle", [False, True], ids=["in order", "unsorted file"])
def test_windows_across_a_gap_or_an_irregular_step_are_dropped(write_nc, caplog, shuffle):
    path = write_nc(_with_gap_and_shift(shuffle))
    with caplog.at_level(logging.WARNING, logger="data_io"):
        data = prepare(DataConfig(data=str(path), **CFG))
    # 47 steps: train 0..33 (29 windows), val 33..40 (3), test 40..47 (3). The gap (spacing 19) drops the
    # train windows starting at 16..19; the late stamp (spacings 28, 29) those at 25..28: 4 + 4 = 8 dropped.
    assert data.splits == {"train": (0, 33), "val": (33, 40), "test": (40, 47)}
    assert data.starts("train").tolist() == list(range(0, 16)) + list(range(20, 25))
    assert len(data.starts("val")) == 3 and len(data.starts("test")) == 3
    assert "dropped 8 window(s)" in caplog.text and "train 8, val 0, test 0" in caplog.text
    assert "largest gaps: 2001-01-05T18:00:00 -> 2001-01-06T06:00:00 (12h)" in caplog.text


def test_a_regular_file_drops_nothing(write_nc, caplog):
    with caplog.at_level(logging.WARNING, logger="data_io"):
        data = prepare(DataConfig(data=str(write_nc(generic_dataset(n_time=48))), **CFG))
    assert len(data.starts("train")) == 34 - 4 and "dropped" not in caplog.text


def test_a_file_without_a_regular_window_is_one_line_with_the_spacings(write_nc, run_main, tmp_path):
    ds = generic_dataset(n_time=30)
    hours = np.concatenate([[0], np.cumsum([12 if i % 3 == 2 else 6 for i in range(29)])])
    ds = ds.assign_coords(time=np.datetime64("2001-01-01T00") + hours.astype("timedelta64[h]"))
    path = write_nc(ds)
    with pytest.raises(DataError, match=r"spacings found: 6h x 20, 12h x 9\)"):
        prepare(DataConfig(data=str(path), **CFG))
    code, _, err = run_main(["--data", path, "--output-dir", tmp_path / "run", *FAST, "--window-size", "4"])
    assert_one_line_error(code, err, "no 5 consecutive time steps are one time step (6h) apart", "6h x 20")


def test_a_split_without_a_regular_window_is_refused(write_nc):
    ds = generic_dataset(n_time=48)
    times = ds["time"].values.copy()
    times[37] += np.timedelta64(1, "h")  # val is steps 34..41; every one of its windows touches step 37
    path = write_nc(ds.assign_coords(time=times))
    with pytest.raises(DataError, match=r"the val split .* holds no 5 consecutive steps one time step \(6h\) apart"):
        prepare(DataConfig(data=str(path), **CFG))
