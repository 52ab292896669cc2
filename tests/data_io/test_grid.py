"""Projected grids (Lambert conformal through pyproj, and a WRF-style file): boxes, arrays, cache, refusals."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyproj
import pytest
import xarray as xr

from data_io import DataConfig, DataError, prepare
from data_io._grid import box_cells
from tests._projected import lambert_grid, projected_dataset, write_projected, write_wrf

# (lat_min, lat_max, lon_min, lon_max): the default box, a signed-longitude spelling of it, thin and small ones.
BOXES = [(25.0, 40.0, 110.0, 125.0), (25.0, 40.0, -250.0, -235.0), (30.0, 31.0, 100.0, 130.0),
         (24.0, 47.0, 114.0, 116.0), (33.3, 37.7, 108.2, 121.9)]


def _brute_force_rectangle(lat, lon, box):
    """Loop over every cell: the first/last row and column holding a centre inside the box."""
    lat_min, lat_max, lon_min, lon_max = box
    rows, cols = [], []
    for i in range(lat.shape[0]):
        for j in range(lat.shape[1]):
            east_of_min = (float(lon[i, j]) - lon_min) % 360.0
            if lat_min <= lat[i, j] <= lat_max and east_of_min <= (lon_max - lon_min) % 360.0:
                rows.append(i)
                cols.append(j)
    return (list(range(min(rows), max(rows) + 1)), list(range(min(cols), max(cols) + 1))), len(rows)


@pytest.mark.parametrize("box", BOXES)
def test_box_selects_the_smallest_rectangle_holding_every_centre_inside(box):
    _, _, lat, lon = lambert_grid()
    rows, cols = box_cells(lat, lon, *box)
    (want_rows, want_cols), _ = _brute_force_rectangle(lat, lon, box)
    assert rows.tolist() == want_rows and cols.tolist() == want_cols


def test_box_across_180e_on_a_grid_with_signed_longitudes():
    _, _, lat, lon = lambert_grid(longitude_of_central_meridian=180.0)
    assert lon.min() < -170 and lon.max() > 170  # the file's longitudes jump from 180 to -180 inside the grid
    box = (30.0, 40.0, 172.0, 188.0)
    rows, cols = box_cells(lat, lon, *box)
    assert (rows.tolist(), cols.tolist()) == _brute_force_rectangle(lat, lon, box)[0]
    assert box_cells(lat, lon, 30.0, 40.0, -188.0, -172.0) is not None


def test_box_reaching_beyond_the_grid_is_not_covered():
    _, _, lat, lon = lambert_grid()
    assert box_cells(lat, lon, 25.0, 70.0, 110.0, 125.0) is None  # north of the domain
    assert box_cells(lat, lon, 25.0, 40.0, 10.0, 20.0) is None  # nowhere near it


@pytest.fixture(scope="module")
def cf_file(tmp_path_factory):
    return write_projected(tmp_path_factory.mktemp("grid") / "lambert.nc")


def test_prepared_arrays_are_the_files_cells_with_2d_coordinates(cf_file, caplog):
    cfg = DataConfig(data=str(cf_file), target=["TEM"], variables=["TEM"], cache_threshold_mb=1000)
    with caplog.at_level(logging.INFO, logger="data_io"):
        data = prepare(cfg)
    with xr.open_dataset(cf_file) as ds:
        lat, lon = ds["latitude"].values, ds["longitude"].values
        (rows, cols), n_inside = _brute_force_rectangle(lat, lon, BOXES[0])
        cells = np.ix_(rows, cols)
        np.testing.assert_array_equal(data.lat, lat[cells])
        np.testing.assert_array_equal(data.lon, lon[cells])
        tem = ds["TEM"].values[:, :, rows][:, :, :, cols]
    assert data.targets.shape == (tem.shape[0], 2, len(rows), len(cols))
    stats = data.target_stats  # TEM is not log-transformed: a plain z-score per channel
    physical = data.targets * stats.std[None, :, None, None] + stats.mean[None, :, None, None]
    np.testing.assert_allclose(physical, tem, rtol=1e-5)
    assert data.channels == ["TEM@850", "TEM@500"]
    assert data.grid["mapping"]["name"] == "lambert_conformal_conic"
    assert data.grid["mapping"]["attrs"]["standard_parallel"] == [30.0, 60.0]
    assert data.grid["axes"]["x"]["values"] == ds["x"].values[cols].tolist()
    text = caplog.text
    assert f"holds the centres of {n_inside} of {lat.size} cells" in text
    assert f"({len(rows)} x {len(cols)} = {len(rows) * len(cols)} cells)" in text


def test_cache_entry_keeps_the_2d_coordinates_and_the_grid(cf_file, tmp_path):
    cfg = DataConfig(data=str(cf_file), cache_threshold_mb=0, cache_dir=str(tmp_path / "cache"))
    built, reopened = prepare(cfg), prepare(cfg)
    assert reopened.cache_dir is not None and reopened.cache_dir == built.cache_dir
    np.testing.assert_array_equal(reopened.lat, built.lat)
    np.testing.assert_array_equal(reopened.lon, built.lon)
    assert reopened.lat.ndim == 2 and reopened.grid == built.grid
    np.testing.assert_array_equal(reopened.inputs, built.inputs)


def test_grid_without_the_default_box_is_used_whole(tmp_path, caplog):
    path = tmp_path / "west.nc"
    projected_dataset(ny=12, nx=14, longitude_of_central_meridian=92.0).to_netcdf(path)
    with caplog.at_level(logging.INFO, logger="data_io"):
        data = prepare(DataConfig(data=str(path), cache_threshold_mb=1000))
    assert data.lat.shape == (12, 14) and data.inputs.shape[-2:] == (12, 14)
    assert ("does not cover the default downstream box; using the whole grid (projected grid 12 x 14 cells"
            in caplog.text)


def test_box_partly_outside_the_grid_is_refused(cf_file):
    cfg = DataConfig(data=str(cf_file), downstream_lat_min=30.0, downstream_lat_max=70.0)
    with pytest.raises(DataError, match=r"--downstream-lat/lon-min/max: the box 30.0\.\.70.0N.*projected grid 24 x 26"):
        prepare(cfg)


def test_upstream_box_is_its_own_rectangle(cf_file):
    cfg = DataConfig(data=str(cf_file), include_upstream=True, upstream_lat_min=30.0, upstream_lat_max=45.0,
                     upstream_lon_min=100.0, upstream_lon_max=112.0, cache_threshold_mb=1000)
    data = prepare(cfg)
    with xr.open_dataset(cf_file) as ds:
        lat, lon = ds["latitude"].values, ds["longitude"].values
    (rows, cols), _ = _brute_force_rectangle(lat, lon, (30.0, 45.0, 100.0, 112.0))
    assert data.upstream.shape[-2:] == (len(rows), len(cols))
    np.testing.assert_array_equal(data.upstream_lat, lat[np.ix_(rows, cols)])


def test_wrf_file_reads_times_xlat_and_its_lambert_projection(tmp_path):
    path = write_wrf(tmp_path / "wrfout_d01.nc", days=30)
    data = prepare(DataConfig(data=str(path), cache_threshold_mb=1000))
    with xr.open_dataset(path) as ds:
        xlat, xlong = ds["XLAT"].values[0], ds["XLONG"].values[0]
        stamps = [t.decode() for t in ds["Times"].values]
    assert data.channels == ["RAINNC", "T850"]
    assert str(np.datetime_as_string(data.times[1], unit="s")).replace("T", "_") == stamps[1]
    (rows, cols), _ = _brute_force_rectangle(xlat, xlong, BOXES[0])
    np.testing.assert_array_equal(data.lat, xlat[np.ix_(rows, cols)])
    assert data.grid["dims"] == ["south_north", "west_east"] and data.grid["lat_name"] == "XLAT"
    assert data.grid["mapping"]["attrs"]["standard_parallel"] == [30.0, 60.0]


def test_moving_grid_is_refused(tmp_path):
    path = write_wrf(tmp_path / "wrfout_nest.nc", days=3)
    with xr.open_dataset(path) as ds:
        moved = ds.load()
    moved["XLAT"][-1] += 0.5
    moved.to_netcdf(tmp_path / "moved.nc")
    with pytest.raises(DataError, match="'XLAT' changes over time"):
        prepare(DataConfig(data=str(tmp_path / "moved.nc")))


def test_nan_latitude_cell_is_refused(tmp_path):
    ds = projected_dataset(days=3, ny=6, nx=6)
    lat = ds["latitude"].values.copy()
    lat[2, 3] = np.nan
    ds.assign_coords(latitude=(("y", "x"), lat)).to_netcdf(tmp_path / "hole.nc")
    with pytest.raises(DataError, match="coordinate 'latitude' has 1 cell"):
        prepare(DataConfig(data=str(tmp_path / "hole.nc")))


def test_cosmo_style_rotated_pole_grid_keeps_its_rlat_rlon_axes(tmp_path):
    mapping = {"grid_mapping_name": "rotated_latitude_longitude", "grid_north_pole_latitude": 55.0,
               "grid_north_pole_longitude": -65.0}
    crs = pyproj.CRS.from_cf(mapping)
    rlat, rlon = np.arange(-6.0, 6.01, 1.0), np.arange(-5.0, 5.01, 1.0)
    lon, lat = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True).transform(*np.meshgrid(rlon, rlat))
    t = pd.date_range("2021-06-01", periods=60, freq="6h")
    rng = np.random.default_rng(1)
    ds = xr.Dataset(
        {"T_2M": (("time", "rlat", "rlon"), (280 + lat + rng.standard_normal((60, *lat.shape))).astype("float32"),
                  {"units": "K", "grid_mapping": "rotated_pole"}),
         "rotated_pole": ((), np.int8(0), mapping)},
        coords={"time": t, "rlat": ("rlat", rlat, {"standard_name": "grid_latitude", "units": "degrees"}),
                "rlon": ("rlon", rlon, {"standard_name": "grid_longitude", "units": "degrees"}),
                "lat": (("rlat", "rlon"), lat, {"standard_name": "latitude", "units": "degrees_north"}),
                "lon": (("rlat", "rlon"), lon, {"standard_name": "longitude", "units": "degrees_east"})},
    )
    ds.to_netcdf(tmp_path / "cosmo.nc")
    box = (float(np.percentile(lat, 20)), float(np.percentile(lat, 80)),
           float(np.percentile(lon, 20)), float(np.percentile(lon, 80)))
    cfg = DataConfig(data=str(tmp_path / "cosmo.nc"), downstream_lat_min=box[0], downstream_lat_max=box[1],
                     downstream_lon_min=box[2], downstream_lon_max=box[3], cache_threshold_mb=1000)
    data = prepare(cfg)
    (rows, cols), _ = _brute_force_rectangle(lat, lon, box)
    np.testing.assert_array_equal(data.lat, lat[np.ix_(rows, cols)])
    assert data.grid["dims"] == ["rlat", "rlon"] and data.grid["mapping"]["name"] == "rotated_pole"
    assert data.grid["axes"]["y"]["name"] == "rlat" and data.grid["axes"]["y"]["values"] == rlat[rows].tolist()
    assert data.grid["axes"]["x"]["values"] == rlon[cols].tolist()
