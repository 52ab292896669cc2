"""A regional model's projected grid end to end: model.train -> model.predict -> the forecast's grid.

Files are written on a real Lambert conformal projection (pyproj): CF-style (y, x, latitude/longitude,
lambert_conformal_conic) and WRF-style (south_north/west_east, XLAT/XLONG, Times, MAP_PROJ attributes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyproj
import pytest
import torch
import xarray as xr

from data_io import DataConfig, prepare
from data_io.demo import make_demo
from model.evaluate import calendar_months, evaluate_checkpoint
from model.metrics import denormalize, latitude_weights
from model.predict import main
from tests._projected import projected_dataset, write_projected, write_wrf
from tests.conftest import train_in_process

TRAIN = ["--num-epochs", "1", "--num-workers", "0", "--hidden-channels", "4", "--batch-size", "8", "--device", "cpu"]


def _train(data: Path, out: Path, *args: str) -> Path:
    code, stdout, stderr = train_in_process(["--data", data, "--output-dir", out, *TRAIN, *args])
    assert code == 0, stderr[-2000:]
    assert "holds the centres of 163 of 624 cells" in stdout + stderr  # the box's cell counts are logged
    return out / "best.pt"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("projected")
    cf, wrf = write_projected(root / "lambert.nc"), write_wrf(root / "wrfout_d01.nc")
    return {"cf": cf, "wrf": wrf, "cf_ckpt": _train(cf, root / "cf_run", "--target", "TEM"),
            "wrf_ckpt": _train(wrf, root / "wrf_run"), "root": root}


def _predict(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args] + ["--device", "cpu"])
    return exit_info.value.code, capsys.readouterr().err


def test_forecast_is_written_on_the_inputs_projected_grid(runs, capsys):
    out = runs["root"] / "forecast.nc"
    code, err = _predict(capsys, "--checkpoint", runs["cf_ckpt"], "--data", runs["cf"], "--output", out)
    assert code == 0, err
    with xr.open_dataset(runs["cf"]) as src, xr.open_dataset(out) as fc:
        rows = np.nonzero(np.isin(src["y"].values, fc["y"].values))[0]
        cols = np.nonzero(np.isin(src["x"].values, fc["x"].values))[0]
        assert rows.size == fc.sizes["y"] == 14 and cols.size == fc.sizes["x"] == 13
        tem = fc["TEM"]
        assert tem.dims == ("time", "level", "y", "x")
        assert {"latitude", "longitude"} <= set(tem.coords)  # 2-D coordinates, found through CF `coordinates`
        for name in ("latitude", "longitude"):
            assert fc[name].dtype == src[name].dtype
            np.testing.assert_array_equal(fc[name].values, src[name].values[np.ix_(rows, cols)])
            assert fc[name].attrs["units"] == src[name].attrs["units"]
        assert tem.attrs["grid_mapping"] == "lambert_conformal_conic"
        assert "latitude longitude" in tem.encoding["coordinates"]
        mapping, original = fc["lambert_conformal_conic"].attrs, src["lambert_conformal_conic"].attrs
        assert set(mapping) == set(original)
        for key, value in original.items():
            np.testing.assert_array_equal(mapping[key], value)
        # The written projection maps the forecast's x/y onto its latitudes and longitudes.
        crs = pyproj.CRS.from_cf(dict(mapping))
        lon, lat = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True).transform(
            *np.meshgrid(fc["x"].values, fc["y"].values))
        np.testing.assert_allclose(lat, fc["latitude"].values, atol=1e-4)
        np.testing.assert_allclose(lon, fc["longitude"].values, atol=1e-4)
        assert np.isfinite(tem.values).all()


def test_wrf_forecast_keeps_xlat_xlong_and_a_cf_lambert_mapping(runs, capsys):
    out = runs["root"] / "wrf_forecast.nc"
    code, err = _predict(capsys, "--checkpoint", runs["wrf_ckpt"], "--data", runs["wrf"], "--output", out)
    assert code == 0, err
    data = prepare(DataConfig(data=str(runs["wrf"])))
    with xr.open_dataset(out) as fc:
        assert fc["RAINNC"].dims == ("time", "south_north", "west_east")
        np.testing.assert_array_equal(fc["XLAT"].values, data.lat.astype("float32"))
        np.testing.assert_array_equal(fc["XLONG"].values, data.lon.astype("float32"))
        assert fc["RAINNC"].attrs["grid_mapping"] == "lambert_conformal_conic"
        assert fc["lambert_conformal_conic"].attrs["longitude_of_central_meridian"] == 115.0
        crs = pyproj.CRS.from_cf(dict(fc["lambert_conformal_conic"].attrs))  # a valid CF grid mapping
        assert crs.to_cf()["grid_mapping_name"] == "lambert_conformal_conic"


def test_checkpoint_carries_the_2d_grid(runs):
    ckpt = torch.load(runs["cf_ckpt"], weights_only=False)
    assert np.asarray(ckpt["meta"]["lat"]).shape == (14, 13)
    assert ckpt["meta"]["grid"]["mapping"]["name"] == "lambert_conformal_conic"
    record = ckpt["history"][0]
    assert np.isfinite(record["val_rmse"]) and np.isfinite(record["persistence_rmse"])


def test_a_file_on_another_grid_is_refused(runs, capsys, tmp_path):
    shifted = tmp_path / "shifted.nc"
    projected_dataset(longitude_of_central_meridian=116.0).to_netcdf(shifted)
    code, err = _predict(capsys, "--checkpoint", runs["cf_ckpt"], "--data", shifted, "--output", tmp_path / "f.nc")
    assert code == 2 and "the forecast box here is lat" in err and "cells" in err
    assert not (tmp_path / "f.nc").exists()
    regular = tmp_path / "regular.nc"
    make_demo(days=40).sel(level=[850.0, 500.0])[["TEM", "precipitation"]].to_netcdf(regular)
    code, err = _predict(capsys, "--checkpoint", runs["cf_ckpt"], "--data", regular, "--output", tmp_path / "f.nc")
    assert code == 2 and "regular lat/lon grid" in err and "projected grid" in err


def test_persistence_and_climatology_scores_use_each_cells_latitude(runs):
    data = prepare(DataConfig(data=str(runs["cf"]), target=["TEM"]))
    metrics = evaluate_checkpoint(runs["cf_ckpt"], data, device="cpu")
    phys = denormalize(data.targets.astype("float64"), data.target_stats)  # (time, channel, y, x)
    w = np.cos(np.deg2rad(data.lat)) / np.cos(np.deg2rad(data.lat)).mean()
    np.testing.assert_allclose(latitude_weights(data.lat), w)
    months, (a, b), c = calendar_months(data.times), data.splits["train"], data.config
    for k, name in enumerate(data.target_channels):
        sse = {"persistence": 0.0, "climatology": 0.0}
        weight = 0.0
        for start in data.starts("test"):
            last = start + c.window_size - 1
            t = last + c.target_offset
            same_month = [i for i in range(a, b) if months[i] == months[t]] or list(range(a, b))
            for method, fc in (("persistence", phys[last, k]), ("climatology", phys[same_month, k].mean(axis=0))):
                sse[method] += float((w * (fc - phys[t, k]) ** 2).sum())
            weight += float(w.sum())
        for method, total in sse.items():
            assert metrics["channels"][name]["rmse"][method][0] == pytest.approx((total / weight) ** 0.5, rel=1e-5)
