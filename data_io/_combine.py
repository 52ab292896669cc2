"""Many opened files -> one dataset: concatenated in time, merged across variables, lazily (dask).

What ``xr.open_mfdataset(combine="by_coords")`` does, done in steps so that each refusal names the two files
involved: files on different grids, files that hold the same time step with different values, variable groups
that cover different time steps. Files that repeat a step with equal values (a month file overlapping the next by
one step) are fine: the repeated steps are read from the first file only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import xarray as xr

from data_io._errors import DataError

log = logging.getLogger(__name__)


def combine(datasets: list[xr.Dataset], paths: list[Path]) -> xr.Dataset:
    """One lazy dataset from standardized, dask-chunked datasets (one per path); closes them all when closed."""
    parts = [(_drop_text(ds), str(p)) for ds, p in zip(datasets, paths)]
    _check_grids(parts)
    grid = {dim: parts[0][0][dim] for dim in ("lat", "lon")}  # equal within 1e-6: one set of values for the joins
    parts = [(ds.assign_coords(grid), name) for ds, name in parts]
    for ds, name in parts:
        times = ds["time"].values
        if len(np.unique(times)) != len(times):
            raise DataError(f"{name}: duplicate time stamps; remove the repeated steps from the file")
    groups: dict[tuple[str, ...], list[tuple[xr.Dataset, str]]] = {}
    for ds, name in parts:
        groups.setdefault(_time_variables(ds), []).append((ds, name))
    _check_disjoint(groups)
    joined = [_concat_in_time(members) for members in groups.values()]
    if len(joined) == 1:
        out = joined[0][0]
    else:
        joined = [(ds if _sorted(ds["time"].values) else ds.sortby("time"), name) for ds, name in joined]
        _check_same_times(joined)
        try:
            out = xr.merge([ds for ds, _ in joined], join="exact", compat="override", combine_attrs="override")
        except ValueError as exc:
            raise DataError(f"--data: the variable groups of {joined[0][1]} and {joined[1][1]} do not align "
                            f"({str(exc)[:120]}); give them the same levels and grid") from None
    log.info("Combined %d files: %d variable group(s), %d time steps", len(parts), len(groups), out.sizes["time"])
    out.set_close(lambda: [ds.close() for ds in datasets])
    return out


def _drop_text(ds: xr.Dataset) -> xr.Dataset:
    """Non-numeric variables (ERA5's ``expver`` per step) are not trained on and would only block the merge."""
    return ds.drop_vars([v for v in ds.data_vars if ds[v].dtype.kind not in "fiucmM"])


def _time_variables(ds: xr.Dataset) -> tuple[str, ...]:
    return tuple(sorted(str(v) for v in ds.data_vars if "time" in ds[v].dims))


def _check_grids(parts: list[tuple[xr.Dataset, str]]) -> None:
    first, first_name = parts[0]
    for ds, name in parts[1:]:
        for dim in ("lat", "lon"):
            a, b = first[dim].values, ds[dim].values
            if a.shape != b.shape or not np.allclose(a, b, rtol=0, atol=1e-6):
                raise DataError(
                    f"--data: {first_name} and {name} are on different grids ({dim} {_extent(a)} vs {_extent(b)}); "
                    "regrid the files onto one grid or pass only files of one grid"
                )


def _extent(values: np.ndarray) -> str:
    return f"{values.min():g}..{values.max():g}, {values.size} points" if values.size else "empty"


def _check_disjoint(groups: dict[tuple[str, ...], list[tuple[xr.Dataset, str]]]) -> None:
    """A variable in two groups would be taken from one of them without a check: refuse it."""
    seen: dict[str, str] = {}
    for key, members in groups.items():
        for var in key:
            if var in seen:
                raise DataError(
                    f"--data: {seen[var]} and {members[0][1]} both hold {var} but different sets of variables; "
                    "split the files by variable or by time, not both ways at once"
                )
        seen.update(dict.fromkeys(key, members[0][1]))


def _concat_in_time(members: list[tuple[xr.Dataset, str]]) -> tuple[xr.Dataset, str]:
    """Files of one variable group, ordered by their first step, with repeated equal steps read once."""
    members = sorted(members, key=lambda m: m[0]["time"].values.min())
    kept = [ds for ds, _ in members]
    for i, (a, name_a) in enumerate(members):
        for j in range(i + 1, len(members)):
            b, name_b = kept[j], members[j][1]
            if b.sizes["time"] == 0 or b["time"].values.min() > a["time"].values.max():
                continue
            common = np.intersect1d(a["time"].values, b["time"].values)
            if common.size == 0:
                continue
            for var in a.data_vars:
                if "time" in a[var].dims and not _same(a[var], b[var], common):
                    raise DataError(
                        f"--data: {name_a} and {name_b} both hold {common.size} time step(s) from {common[0]} "
                        f"with different values of {var}; remove the overlap from one of the files"
                    )
            kept[j] = b.isel(time=np.flatnonzero(~np.isin(b["time"].values, common)))
            log.info("%s repeats %d step(s) of %s with equal values; reading them once", name_b, common.size, name_a)
    kept = [ds for ds in kept if ds.sizes["time"]]
    if len(kept) == 1:
        return kept[0], members[0][1]
    try:
        out = xr.concat(kept, dim="time", data_vars="minimal", coords="minimal", compat="override", join="exact")
    except ValueError as exc:
        raise DataError(f"--data: {members[0][1]} .. {members[-1][1]} cannot be joined in time ({str(exc)[:120]}); "
                        "give every file the same levels and grid") from None
    return out, members[0][1]


def _same(a: xr.DataArray, b: xr.DataArray, common: np.ndarray) -> bool:
    """Equal values (NaN equal to NaN) at the common steps; computed through dask, a chunk at a time."""
    return bool(a.sel(time=common).variable.equals(b.sel(time=common).variable))


def _sorted(times: np.ndarray) -> bool:
    return all(x < y for x, y in zip(times[:-1], times[1:]))


def _check_same_times(joined: list[tuple[xr.Dataset, str]]) -> None:
    (first, first_name), rest = joined[0], joined[1:]
    for ds, name in rest:
        a, b = first["time"].values, ds["time"].values
        if a.shape != b.shape or not (a == b).all():
            raise DataError(
                f"--data: {first_name} and {name} hold different variables over different time steps "
                f"({a.size} steps {a[0]} .. {a[-1]} vs {b.size} steps {b[0]} .. {b[-1]}); "
                "give every variable the same time steps"
            )
