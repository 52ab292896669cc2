"""Verification plots from the tidy table (model.verify_table) and the fields: skill against lead, performance
diagrams (Roebber 2009) per threshold, and truth / forecast / error maps of chosen cases at every lead."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

FORMATS = ("png", "pdf", "svg")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _check(fmt: str, dpi: int) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, but got {fmt!r}")
    if dpi < 10:
        raise ValueError(f"--dpi must be at least 10, but got {dpi}")


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_")


def _save(fig, path: Path, dpi: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)
    return path


def plot_skill_vs_lead(table: pd.DataFrame, out_dir: str | Path, scores: Sequence[str] = (
        "rmse_skill_persistence", "rmse_skill_climatology", "acc"), fmt: str = "png", dpi: int = 100) -> list[Path]:
    """One figure per variable: each score against lead, a line per model."""
    _check(fmt, dpi)
    plt = _pyplot()
    paths = []
    for var, g in table.groupby("variable", sort=False):
        present = [s for s in scores if s in set(g["score"])]
        if not present:
            continue
        fig, axes = plt.subplots(1, len(present), figsize=(4.5 * len(present), 3.6), squeeze=False,
                                 constrained_layout=True)
        for ax, s in zip(axes[0], present):
            for model, m in g[g["score"] == s].groupby("model", sort=False):
                ax.plot(m["lead"], m["value"], marker="o", label=model)
            ax.axhline(0.0, color="0.6", lw=0.8)
            ax.set_xlabel("lead")
            ax.set_title(f"{var}: {s}")
        axes[0, 0].legend(fontsize="small")
        paths.append(_save(fig, Path(out_dir) / f"skill_{_safe(var)}.{fmt}", dpi))
    return paths


def plot_performance_diagrams(table: pd.DataFrame, out_dir: str | Path, fmt: str = "png",
                              dpi: int = 100) -> list[Path]:
    """Per variable and threshold: POD against success ratio, a point per model and lead, over CSI contours
    and frequency-bias lines."""
    _check(fmt, dpi)
    plt = _pyplot()
    sr_grid, pod_grid = np.meshgrid(np.linspace(0.01, 1, 200), np.linspace(0.01, 1, 200))
    csi = 1 / (1 / sr_grid + 1 / pod_grid - 1)
    paths = []
    pod_rows = table[table["score"].str.startswith("pod@")]
    for (var, label), g in pod_rows.groupby(["variable", "score"], sort=False):
        threshold = label.split("@", 1)[1]
        sr = table[(table["variable"] == var) & (table["score"] == f"sr@{threshold}")]
        fig, ax = plt.subplots(figsize=(5.2, 5), constrained_layout=True)
        cs = ax.contour(sr_grid, pod_grid, csi, levels=np.arange(0.1, 1.0, 0.1), colors="0.7", linewidths=0.8)
        ax.clabel(cs, fmt="%.1f", fontsize="x-small")
        for b in (0.3, 0.5, 0.8, 1.0, 1.3, 2.0, 3.0):
            x = np.linspace(0, 1, 50)
            ax.plot(x, b * x, ls="--", color="0.8", lw=0.7)
            ax.annotate(f"{b:g}", (min(1, 1 / b), min(1, b)), fontsize="x-small", color="0.5")
        for model, m in g.groupby("model", sort=False):
            s = sr[sr["model"] == model].set_index("lead")["value"]
            pts = m.set_index("lead")["value"]
            ax.plot(s.reindex(pts.index), pts, marker="o", label=model)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="success ratio (1 - FAR)", ylabel="probability of detection",
               title=f"{var} >= {threshold} (CSI contours, bias dashed)")
        ax.legend(fontsize="small", loc="lower right")
        paths.append(_save(fig, Path(out_dir) / f"performance_{_safe(var)}_{_safe(threshold)}.{fmt}", dpi))
    return paths


def plot_case_maps(truth: xr.DataArray, forecasts: Mapping[str, xr.DataArray], cases: Sequence[int],
                   out_dir: str | Path, fmt: str = "png", dpi: int = 100, vmin: float | None = None,
                   vmax: float | None = None) -> list[Path]:
    """Per case (an index along `time`): a row per lead; truth, each forecast, then each forecast's error."""
    _check(fmt, dpi)
    plt = _pyplot()
    name, units = truth.name or "field", truth.attrs.get("units", "")
    n_time = truth.sizes["time"]
    bad = [c for c in cases if not -n_time <= c < n_time]
    if bad:
        raise ValueError(f"case indices {bad} are outside the {n_time} forecasts; pick 0..{n_time - 1}")
    paths = []
    for c in cases:
        t = truth.isel(time=c)
        fcs = {m: f.isel(time=c) for m, f in forecasts.items()}
        n_lead, n_col = t.sizes["lead"], 1 + 2 * len(fcs)
        # Shared colour bars per row and no constrained layout: one bar per panel made this 5x slower.
        fig, axes = plt.subplots(n_lead, n_col, figsize=(3.4 * n_col, 2.9 * n_lead), squeeze=False)
        for j in range(n_lead):
            o = t.isel(lead=j)
            both = np.concatenate([o.values.ravel(), *(f.isel(lead=j).values.ravel() for f in fcs.values())])
            lo = float(np.nanmin(both)) if vmin is None else vmin
            hi = float(np.nanmax(both)) if vmax is None else vmax
            errs = {m: f.isel(lead=j) - o for m, f in fcs.items()}
            emax = max([float(np.nanmax(np.abs(e.values))) for e in errs.values() if np.isfinite(e.values).any()]
                       or [1.0]) or 1.0
            panels = [(o, "truth", "viridis", lo, hi)]
            panels += [(f.isel(lead=j), m, "viridis", lo, hi) for m, f in fcs.items()]
            panels += [(e, f"{m} - truth", "RdBu_r", -emax, emax) for m, e in errs.items()]
            lead = t["lead"].values[j] if "lead" in t.coords else j + 1
            meshes = []
            for ax, (arr, title, cmap, a, b) in zip(axes[j], panels):
                meshes.append(_draw(ax, arr, cmap, a, b))
                ax.set_title(f"{title}, lead {lead}", fontsize="small")
            k = 1 + len(fcs)
            fig.colorbar(meshes[0], ax=axes[j, :k].tolist(), label=units, shrink=0.9)
            if fcs:
                fig.colorbar(meshes[-1], ax=axes[j, k:].tolist(), label=f"error ({units})", shrink=0.9)
        when = t["time"].values if "time" in t.coords else c
        fig.suptitle(f"{name}: case {c} ({when})")
        paths.append(_save(fig, Path(out_dir) / f"case_{_safe(name)}_{c}.{fmt}", dpi))
    return paths


def _draw(ax, arr: xr.DataArray, cmap: str, vmin: float, vmax: float):
    if "lat" in arr.coords and "lon" in arr.coords:
        lat, lon = arr["lat"].values, arr["lon"].values
        if lat.ndim == 1:
            lon, lat = np.meshgrid(lon, lat)
        return ax.pcolormesh(lon, lat, arr.values, shading="nearest", cmap=cmap, vmin=vmin, vmax=vmax)
    return ax.imshow(arr.values, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax)
