"""A small synthetic dataset in the reference schema, for first runs, tests and the default search.

Storms drift west to east across 70-140E, and a moist air mass travelling eastward at ~20 deg per step
modulates how much rain they make. The moisture reaching the target box (25-40N, 110-125E) at t+1 is
over the upstream box (25-50N, 70-110E) at t, so a model that reads the upstream box can know it in
advance and one that reads only the target box cannot. Deterministic per seed.

    python -m data_io.demo --output demo.nc [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

LEVELS = [850.0, 500.0, 200.0]
# The reference schema's 11 pressure levels (56 channels with precipitation).
REFERENCE_LEVELS = [1000.0, 925.0, 850.0, 700.0, 600.0, 500.0, 400.0, 300.0, 250.0, 200.0, 150.0]
VARIABLES = ("DPT", "GPH", "TEM", "U", "V")
UNITS = {"DPT": "K", "GPH": "m", "TEM": "K", "U": "m s-1", "V": "m s-1", "precipitation": "mm"}


def make_demo(
    seed: int = 0,
    days: int = 730,
    resolution: float = 2.0,
    levels: list[float] | None = None,
    lat_range: tuple[float, float] = (10.0, 60.0),
    lon_range: tuple[float, float] = (70.0, 140.0),
) -> xr.Dataset:
    """levels=REFERENCE_LEVELS and resolution=0.25 give the reference grid (benchmarks use a cropped domain)."""
    rng = np.random.default_rng(seed)
    levels = list(levels or LEVELS)
    lat = np.arange(lat_range[0], lat_range[1] + 1e-6, resolution)
    lon = np.arange(lon_range[0], lon_range[1] + 1e-6, resolution)
    time = pd.date_range("2020-01-01", periods=days * 2, freq="12h")
    nt = len(time)
    la, lo = np.meshgrid(lat, lon, indexing="ij")

    storms = _storm_field(rng, nt, la, lo)  # (T, H, W) in 0..~2
    moisture = _travelling_moisture(rng, nt, lo)  # (T, 1, W) standard-normal-ish
    season = np.cos(2 * np.pi * (time.day_of_year.values - 200) / 365.25)[:, None, None]  # +1 in July

    rain = storms * np.exp(0.9 * moisture + 0.3 * season) * 6.0
    rain = np.clip(rain - 0.3 + 0.2 * rng.standard_normal(rain.shape), 0.0, None)

    data = {"precipitation": (("time", "lat", "lon"), rain.astype(np.float32))}
    # Standard-atmosphere-like height (m) and temperature (K) for any pressure level (hPa).
    def base_gph(p):
        return 44330.0 * (1 - (p / 1013.25) ** 0.19)

    def base_tem(p):
        return max(216.0, 288.0 - 6.5e-3 * base_gph(p))
    per_level = {v: [] for v in VARIABLES}
    dy = np.gradient(storms, axis=1)
    dx = np.gradient(storms, axis=2)
    for level in levels:
        noise = lambda scale: scale * rng.standard_normal(storms.shape)  # noqa: E731
        tem = base_tem(level) - 0.6 * (la - 10.0) + 6.0 * season - 2.0 * storms + noise(0.5)
        depression = np.clip(10.0 - 3.0 * moisture - 4.0 * storms + noise(0.5), 0.5, None)
        per_level["TEM"].append(tem)
        per_level["DPT"].append(tem - depression)
        per_level["GPH"].append(base_gph(level) - 2.0 * (la - 10.0) * level / 500 - 60.0 * storms + noise(3.0))
        jet = 10.0 + 20.0 * (level == 200.0)
        per_level["U"].append(jet + 15.0 * dy + noise(1.0))
        per_level["V"].append(-15.0 * dx + noise(1.0))
    for name in VARIABLES:
        data[name] = (("time", "level", "lat", "lon"), np.stack(per_level[name], axis=1).astype(np.float32))

    ds = xr.Dataset(data, coords={"time": time, "level": levels, "lat": lat, "lon": lon})
    for name, units in UNITS.items():
        ds[name].attrs["units"] = units
    ds["level"].attrs["units"] = "hPa"
    ds["lat"].attrs.update(units="degrees_north", standard_name="latitude")
    ds["lon"].attrs.update(units="degrees_east", standard_name="longitude")
    ds.attrs["title"] = f"convlstm-tune demo data (seed {seed}): storms drifting west to east"
    return ds


def _storm_field(rng: np.random.Generator, nt: int, la: np.ndarray, lo: np.ndarray) -> np.ndarray:
    field = np.zeros((nt, *la.shape))
    n_storms = rng.poisson(0.5 * nt)
    births = rng.integers(-20, nt, n_storms)
    for birth, lat0, speed, radius, amp in zip(
        births,
        rng.uniform(24.0, 48.0, n_storms),
        rng.uniform(3.0, 5.0, n_storms),
        rng.uniform(3.0, 6.0, n_storms),
        rng.lognormal(0.0, 0.4, n_storms),
    ):
        steps = np.arange(max(birth, 0), min(nt, birth + int(90.0 / speed) + 1))
        lon_c = 62.0 + speed * (steps - birth)
        d2 = (lo[None] - lon_c[:, None, None]) ** 2 + (la[None] - lat0) ** 2
        field[steps] += amp * np.exp(-d2 / (2 * radius**2))
    return field


def _travelling_moisture(rng: np.random.Generator, nt: int, lo: np.ndarray) -> np.ndarray:
    """An AR(1) series m(t) entering at 70E and moving east at 20 deg/step: value m(t - (lon-70)/20)."""
    pad = 8
    m = np.zeros(nt + pad)
    eps = rng.standard_normal(nt + pad)
    for t in range(1, nt + pad):
        m[t] = 0.5 * m[t - 1] + np.sqrt(1 - 0.25) * eps[t]
    lag = (lo[0] - 70.0) / 20.0  # steps since the air at this longitude entered the domain
    src = np.arange(nt)[:, None] + pad - lag[None, :]
    lo_i = np.floor(src).astype(int)
    w = src - lo_i
    values = (1 - w) * m[lo_i] + w * m[np.minimum(lo_i + 1, nt + pad - 1)]
    return values[:, None, :]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m data_io.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True, help="netCDF file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--days", type=int, default=730, help="length of the record (12-hourly steps)")
    parser.add_argument("--resolution", type=float, default=2.0, help="grid spacing in degrees")
    args = parser.parse_args(argv)
    write_demo(args.output, seed=args.seed, days=args.days, resolution=args.resolution)
    print(f"wrote {args.output}")


def write_demo(path: str | Path, seed: int = 0, days: int = 730, resolution: float = 2.0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    make_demo(seed, days, resolution).to_netcdf(tmp, engine="netcdf4")
    tmp.replace(path)
    return path


if __name__ == "__main__":
    main()
