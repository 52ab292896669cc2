import numpy as np
import pytest

from data_io._coords import box_indices, to_file_convention, west_to_east

GLOBAL = np.arange(0.0, 360.0, 5.0)


@pytest.mark.parametrize(
    ("signed_box", "unsigned_box"), [((-70, -50), (290, 310)), ((-180, -170), (180, 190)), ((-10, 10), (350, 10))]
)
def test_signed_and_unsigned_boxes_select_the_same_cells(signed_box, unsigned_box):
    a = box_indices(GLOBAL, *signed_box, periodic=True)
    b = box_indices(GLOBAL, *unsigned_box, periodic=True)
    np.testing.assert_array_equal(a, b)
    assert np.all(np.diff((GLOBAL[a] - GLOBAL[a][0]) % 360) > 0), "cells come west to east"


def test_box_across_the_meridian_runs_west_to_east():
    idx = box_indices(GLOBAL, -10, 10, periodic=True)
    np.testing.assert_array_equal(GLOBAL[idx], [350, 355, 0, 5, 10])


@pytest.mark.parametrize("box", [(0, 360), (-180, 180)])
def test_whole_circle_box_selects_every_longitude(box):
    idx = box_indices(GLOBAL, *box, periodic=True)
    assert sorted(idx) == list(range(GLOBAL.size))


def test_box_beyond_a_regional_grid_is_not_covered():
    lon = np.arange(70.0, 140.0 + 1e-6, 5.0)
    assert box_indices(lon, 0, 20, periodic=True) is None
    assert box_indices(lon, 100, 150, periodic=True) is None
    np.testing.assert_array_equal(lon[box_indices(lon, 110, 125, periodic=True)], [110, 115, 120, 125])


def test_latitude_box_outside_the_grid_is_not_covered():
    lat = np.arange(-30.0, 30.0 + 1e-6, 5.0)
    assert box_indices(lat, 25, 40) is None
    assert box_indices(lat, 40, 25) is None
    np.testing.assert_array_equal(lat[box_indices(lat, -10, 10)], [-10, -5, 0, 5, 10])


def test_regional_grid_across_greenwich_is_ordered_from_its_western_edge():
    lon = np.sort(np.mod(np.arange(-20.0, 20.0 + 1e-6, 5.0), 360.0))  # as standardize stores it
    ordered = to_file_convention(lon[west_to_east(lon)], signed=True)
    np.testing.assert_array_equal(ordered, np.arange(-20.0, 20.0 + 1e-6, 5.0))


def test_global_grid_keeps_its_order():
    np.testing.assert_array_equal(west_to_east(GLOBAL), np.arange(GLOBAL.size))
