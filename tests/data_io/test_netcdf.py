"""prepare() on every schema variant the issue lists, each written to disk as a small netCDF file."""

import logging

import numpy as np
import pytest
import xarray as xr

from data_io import DataConfig, DataError, prepare
from tests.conftest import generic_dataset


def prep(path, **kw):
    return prepare(DataConfig(data=str(path), **kw))


def assert_same_data(a, b):
    np.testing.assert_array_equal(a.inputs, b.inputs)
    np.testing.assert_array_equal(a.targets, b.targets)
    np.testing.assert_array_equal(a.lat, b.lat)
    np.testing.assert_array_equal(a.lon, b.lon)
    assert a.channels == b.channels


@pytest.fixture
def reference(demo_file):
    return prep(demo_file)


def test_reference_schema_gives_one_channel_per_variable_and_level(reference):
    d = reference
    assert d.channels[0] == "precipitation"
    assert d.channels[1:4] == ["DPT@850", "DPT@500", "DPT@200"]
    assert len(d.channels) == 1 + 5 * 3
    assert d.target_channels == ["precipitation"]
    assert d.inputs.dtype == np.float32 and d.inputs.flags.c_contiguous
    # The default downstream box 25..40N, 110..125E on a 5-degree grid.
    np.testing.assert_array_equal(d.lat, [25, 30, 35, 40])
    np.testing.assert_array_equal(d.lon, [110, 115, 120, 125])
    assert d.inputs.shape == (120, 16, 4, 4) and d.targets.shape == (120, 1, 4, 4)


def test_inputs_hold_the_file_values_z_scored(demo_file, reference):
    raw = xr.open_dataset(demo_file)["TEM"].sel(level=500.0, lat=slice(25, 40), lon=slice(110, 125)).values
    c = reference.channels.index("TEM@500")
    s = reference.input_stats
    np.testing.assert_allclose(reference.inputs[:, c], (raw - s.mean[c]) / s.std[c], rtol=1e-5, atol=1e-5)


def test_latitude_longitude_names_read_like_lat_lon(write_nc, small_demo, reference):
    path = write_nc(small_demo.rename(lat="latitude", lon="longitude"), "long_names.nc")
    assert_same_data(prep(path), reference)


@pytest.mark.parametrize("name", ["plev", "pressure"])
def test_plev_and_pressure_level_names_read_like_level(write_nc, small_demo, reference, name):
    path = write_nc(small_demo.rename(level=name), f"{name}.nc")
    d = prep(path)
    assert_same_data(d, reference)
    assert d.levels["DPT"] == [850.0, 500.0, 200.0]


def test_descending_latitudes_select_same_cells(write_nc, small_demo, reference):
    path = write_nc(small_demo.isel(lat=slice(None, None, -1)), "north_to_south.nc")
    d = prep(path)
    assert_same_data(d, reference)
    np.testing.assert_array_equal(d.lat, [25, 30, 35, 40])


@pytest.fixture
def unsigned_and_signed_files(write_nc):
    """The same global data stored with longitudes 0..340 and with -180..160."""
    ds = generic_dataset()
    signed = ds.assign_coords(lon=(ds.lon + 180.0) % 360.0 - 180.0).sortby("lon")
    assert float(signed.lon.min()) < 0
    return write_nc(ds, "lon0360.nc"), write_nc(signed, "lon180.nc")


@pytest.mark.parametrize(
    ("signed_box", "unsigned_box"), [((-160.0, -100.0), (200.0, 260.0)), ((-20.0, 20.0), (340.0, 20.0))]
)
def test_boxes_in_either_longitude_convention_select_same_cells(unsigned_and_signed_files, signed_box, unsigned_box):
    kw = dict(downstream_lat_min=0, downstream_lat_max=40, window_size=2)
    results = [
        prep(path, downstream_lon_min=lo, downstream_lon_max=hi, **kw)
        for path in unsigned_and_signed_files
        for lo, hi in (signed_box, unsigned_box)
    ]
    for other in results[1:]:
        assert_same_data(results[0], other)
    lon = results[0].lon
    assert lon.size >= 3 and np.all(np.diff((lon - lon[0]) % 360) > 0), "longitudes run west to east"


def test_signed_file_remembers_its_convention(unsigned_and_signed_files):
    kw = dict(downstream_lat_min=0, downstream_lat_max=40, downstream_lon_min=200, downstream_lon_max=260)
    unsigned, signed = (prep(path, window_size=2, **kw) for path in unsigned_and_signed_files)
    assert not unsigned.lon_signed and signed.lon_signed


def test_cftime_360_day_calendar_is_read(write_nc):
    ds = generic_dataset(n_time=60)
    ds = ds.assign_coords(time=xr.date_range("2000-01-01", periods=60, freq="D", calendar="360_day", use_cftime=True))
    path = write_nc(ds, "360day.nc")
    d = prep(path, window_size=3)
    assert d.times[0].calendar == "360_day"
    assert d.inputs.shape[0] == 60
    # A test split by date works on the 360-day calendar too (2000-02-01 is day 31 of that calendar).
    d = prep(path, window_size=3, test_start_date="2000-02-01")
    assert d.splits["test"] == (30, 60)


def test_generic_file_defaults_to_every_input_channel_as_target(write_nc):
    d = prep(write_nc(generic_dataset(), "generic.nc"), window_size=3)
    assert d.channels == ["t2m", "z@850", "z@500"]
    assert d.target_channels == d.channels


def test_variables_and_target_pick_the_channels(write_nc):
    path = write_nc(generic_dataset(), "generic.nc")
    d = prep(path, window_size=3, variables=["t2m"])
    assert d.channels == ["t2m"] and d.target_channels == ["t2m"]
    d = prep(path, window_size=3, variables=["t2m"], target=["z"])
    assert d.channels == ["t2m"] and d.target_channels == ["z@850", "z@500"]


@pytest.mark.parametrize("flag", ["variables", "target"])
def test_unknown_variable_names_the_flag_and_lists_the_file_variables(write_nc, flag):
    path = write_nc(generic_dataset(), "generic.nc")
    with pytest.raises(DataError, match=rf"--{flag} precip: not in .*generic.nc; the file has t2m, z"):
        prep(path, window_size=3, **{flag: ["precip"]})


def test_file_not_covering_the_default_box_uses_the_whole_grid(write_nc, caplog):
    ds = generic_dataset(lat=np.arange(-30.0, 10.0 + 1e-6, 10.0), lon=np.arange(0.0, 60.0 + 1e-6, 20.0))
    path = write_nc(ds, "tropics.nc")
    with caplog.at_level(logging.INFO):
        d = prep(path, window_size=3)
    assert d.grid_shape == (5, 4)
    assert "does not cover the default downstream box; using the whole grid" in caplog.text


def test_whole_grid_across_greenwich_keeps_columns_west_to_east(write_nc):
    ds = generic_dataset(lat=np.arange(40.0, 60.0 + 1e-6, 10.0), lon=np.arange(-40.0, 40.0 + 1e-6, 20.0))
    d = prep(write_nc(ds, "europe.nc"), window_size=3)
    np.testing.assert_array_equal((d.lon + 180) % 360 - 180, [-40, -20, 0, 20, 40])
    expected = ds["t2m"].values  # already west to east in the file
    s = d.input_stats
    np.testing.assert_allclose(d.inputs[:, 0] * s.std[0] + s.mean[0], expected, rtol=1e-5)


def test_box_given_outside_the_grid_is_an_error(demo_file):
    with pytest.raises(DataError, match="--downstream-lat/lon-min/max: .* is outside .*demo.nc"):
        prep(demo_file, downstream_lat_min=70, downstream_lat_max=80)


def test_upstream_box_outside_the_grid_is_an_error(demo_file):
    with pytest.raises(DataError, match="--include-upstream: the upstream box .* is outside"):
        prep(demo_file, include_upstream=True, upstream_lon_min=0, upstream_lon_max=20)


def test_upstream_box_is_read_with_the_input_statistics(demo_file, reference):
    d = prep(demo_file, include_upstream=True)
    np.testing.assert_array_equal(d.upstream_lat, np.arange(25.0, 50.0 + 1e-6, 5.0))
    np.testing.assert_array_equal(d.upstream_lon, np.arange(70.0, 110.0 + 1e-6, 5.0))
    assert d.upstream.shape == (120, 16, 6, 9)
    # Cells in both boxes (lon 110, lat 25..40) carry the same normalised values in both arrays.
    np.testing.assert_array_equal(d.upstream[:, :, :4, -1], reference.inputs[:, :, :, 0])


def test_nan_inputs_are_filled_and_nan_targets_kept(write_nc, small_demo):
    ds = small_demo.copy(deep=True)
    ds["precipitation"][:, 4, 9] = np.nan  # 30N 115E: a masked cell inside the box
    d = prep(write_nc(ds, "masked.nc"))
    assert np.isnan(d.targets[:, 0, 1, 1]).all() and np.isnan(d.targets).sum() == d.targets.shape[0]
    assert np.isfinite(d.inputs).all()
    assert (d.inputs[:, 0, 1, 1] == 0).all()


def test_unsorted_time_steps_are_sorted(write_nc, small_demo, reference):
    shuffled = small_demo.isel(time=np.random.default_rng(0).permutation(small_demo.sizes["time"]))
    assert_same_data(prep(write_nc(shuffled, "shuffled.nc")), reference)
