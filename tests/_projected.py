"""Small regional-model files on a real Lambert conformal projection (pyproj), CF-style and WRF-style.

The fields are data_io.demo's storms sampled at each cell's centre, so a model has something to learn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyproj
import xarray as xr

from data_io.demo import make_demo

LCC = {
    "grid_mapping_name": "lambert_conformal_conic",
    "standard_parallel": [30.0, 60.0],
    "longitude_of_central_meridian": 115.0,
    "latitude_of_projection_origin": 35.0,
    "earth_radius": 6370000.0,
}


def lambert_grid(ny: int = 24, nx: int = 26, dx_m: float = 120_000.0, **projection: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, y) in metres and the 2-D (lat, lon) of each cell centre of a grid centred on the projection origin.

    ``projection`` overrides LCC's parameters (e.g. longitude_of_central_meridian=180.0 for a grid across 180E).
    """
    crs = pyproj.CRS.from_cf({**LCC, **projection})
    to_geo = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    x = (np.arange(nx) - (nx - 1) / 2) * dx_m
    y = (np.arange(ny) - (ny - 1) / 2) * dx_m
    xx, yy = np.meshgrid(x, y)
    lon, lat = to_geo.transform(xx, yy)
    return x, y, lat, lon


def projected_dataset(days: int = 40, ny: int = 24, nx: int = 26, seed: int = 0, **projection: float) -> xr.Dataset:
    """CF: precipitation (time, y, x) and TEM (time, level, y, x), 2-D latitude/longitude, a grid_mapping variable.

    The demo's fields cover 10..60N, 70..140E: a grid elsewhere gets NaNs.
    """
    x, y, lat, lon = lambert_grid(ny, nx, **projection)
    demo = make_demo(seed=seed, days=days, resolution=2.0).sel(level=[850.0, 500.0])[["precipitation", "TEM"]]
    at = {"lat": xr.DataArray(lat, dims=("y", "x")), "lon": xr.DataArray(lon, dims=("y", "x"))}
    fields = demo.interp(at, method="linear").drop_vars(["lat", "lon"])
    ds = xr.Dataset(
        {name: fields[name].astype("float32") for name in ("precipitation", "TEM")},
        coords={
            "x": ("x", x, {"standard_name": "projection_x_coordinate", "units": "m"}),
            "y": ("y", y, {"standard_name": "projection_y_coordinate", "units": "m"}),
            "latitude": (("y", "x"), lat.astype("float32"), {"standard_name": "latitude", "units": "degrees_north"}),
            "longitude": (("y", "x"), lon.astype("float32"),
                          {"standard_name": "longitude", "units": "degrees_east"}),
        },
    )
    ds["lambert_conformal_conic"] = xr.DataArray(np.int32(0), attrs={**LCC, **projection})
    for name in ("precipitation", "TEM"):
        ds[name].attrs.update(units=demo[name].attrs["units"], grid_mapping="lambert_conformal_conic")
    ds["level"].attrs["units"] = "hPa"
    return ds.transpose("time", "level", "y", "x")


def write_projected(path: Path, **kw) -> Path:
    projected_dataset(**kw).to_netcdf(path, engine="netcdf4")
    return path


def write_wrf(path: Path, days: int = 40, ny: int = 24, nx: int = 26) -> Path:
    """A wrfout-like file: Time/south_north/west_east, a Times character variable, XLAT/XLONG (Time, y, x)."""
    cf = projected_dataset(days=days, ny=ny, nx=nx)
    n = cf.sizes["time"]
    lat, lon = cf["latitude"].values, cf["longitude"].values
    times = np.array([t.strftime("%Y-%m-%d_%H:%M:%S").encode() for t in cf.indexes["time"]], dtype="S19")
    dims = ("Time", "south_north", "west_east")
    ds = xr.Dataset({
        "Times": (("Time",), times),
        "XLAT": (dims, np.broadcast_to(lat, (n, *lat.shape)).copy(), {"units": "degree_north", "description":
                                                                         "LATITUDE, SOUTH IS NEGATIVE"}),
        "XLONG": (dims, np.broadcast_to(lon, (n, *lon.shape)).copy(), {"units": "degree_east", "description":
                                                                          "LONGITUDE, WEST IS NEGATIVE"}),
        "RAINNC": (dims, cf["precipitation"].values, {"units": "mm", "coordinates": "XLONG XLAT"}),
        "T850": (dims, cf["TEM"].sel(level=850.0).values, {"units": "K", "coordinates": "XLONG XLAT"}),
    })
    ds.attrs.update(MAP_PROJ=1, TRUELAT1=30.0, TRUELAT2=60.0, STAND_LON=115.0, MOAD_CEN_LAT=35.0, CEN_LON=115.0,
                    DX=120000.0, DY=120000.0, TITLE=" OUTPUT FROM WRF V4.5 MODEL (test fixture)")
    ds.to_netcdf(path, engine="netcdf4", encoding={"Times": {"char_dim_name": "DateStrLen"}})
    return path
