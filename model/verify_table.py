"""The tidy verification table: one row per model x variable x lead x score, and its writers.

`score_table` scores named forecasts plus persistence and climatology on the same points, and marks each model's
difference from the first named one with a block-bootstrap interval. `write_metrics` writes metrics.json,
metrics.md (one table per variable and lead; `*` marks a difference whose interval excludes 0) and metrics.csv.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from model import verify as v
from model._bootstrap import block_length, paired_difference
from model._fss import fss_parts_all

REFERENCES = ("persistence", "climatology")
PRECIP_NAMES = {"tp", "pr", "precip", "precipitation", "total_precipitation", "rain", "rainfall", "rr", "apcp",
                "prate", "cp", "lsp", "tprate"}
_MM_PER_UNIT = {"m": 1000.0, "cm": 10.0, "mm": 1.0, "kg m-2": 1.0, "kg m**-2": 1.0}


def is_precipitation(name: str, attrs: Mapping | None = None) -> bool:
    """A precipitation-like target: its name (before any "@level") or standard/long name says so."""
    attrs = attrs or {}
    text = f"{attrs.get('standard_name', '')} {attrs.get('long_name', '')}".lower()
    return name.split("@")[0].lower() in PRECIP_NAMES or "precipitation" in text or "rain" in text


def threshold_in_units(mm: float, units: str | None) -> float:
    """A threshold in mm per step, in the variable's own units (ERA5 `tp` is in metres)."""
    return mm / _MM_PER_UNIT.get((units or "mm").strip(), 1.0)


EVENT_SCORES = ("pod", "far", "sr", "csi", "ets", "fbias")
CONTINUOUS_SCORES = ("rmse", "mae", "bias", "corr", "acc")


def _labels(precip: bool, thresholds: Sequence[float], windows: Sequence[int]):
    """(label, score name, position along the extra dims) of every score a variable gets, in table order."""
    out = [(s, s, {}) for s in CONTINUOUS_SCORES]
    if precip:
        for i, t in enumerate(thresholds):
            out += [(f"{s}@{t:g}mm", s, {"threshold": i}) for s in EVENT_SCORES]
            out += [(f"fss@{t:g}mm/{w}", "fss", {"threshold": i, "window": j}) for j, w in enumerate(windows)]
    return out


def _skill_finish(p: xr.Dataset) -> xr.DataArray:
    own = p[[k for k in p.data_vars if not k.startswith("ref_")]]
    ref = p[[k for k in p.data_vars if k.startswith("ref_")]].rename({k: k[4:] for k in p.data_vars
                                                                       if k.startswith("ref_")})
    return v.skill(v.finish("rmse", own), v.finish("rmse", ref))


def _with_ref(parts: xr.Dataset, ref: xr.Dataset) -> xr.Dataset:
    return xr.merge([parts, ref.rename({k: f"ref_{k}" for k in ref.data_vars})])


def score_table(
    forecasts: Mapping[str, xr.Dataset],
    truth: xr.Dataset,
    persistence: xr.Dataset,
    climatology: xr.Dataset,
    thresholds: Sequence[float] = v.RAIN_THRESHOLDS_MM,
    fss_windows: Sequence[int] = v.FSS_WINDOWS,
    precipitation: Sequence[str] | None = None,
    block_days: float = 5.0,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Rows: model, variable, lead, score, value, and (for models after the first) reference, difference,
    low, high, significant. Datasets hold one variable per target, dims (time, lead, <2 spatial>).

    Every method is scored where the truth and all methods are finite, so their numbers compare. `precipitation`
    names the variables that get categorical scores (default: `is_precipitation`).
    """
    clash = set(forecasts) & set(REFERENCES)
    if clash or not forecasts:
        raise ValueError(f"model names must be given and differ from {REFERENCES}, but got {list(forecasts)}")
    methods = {**forecasts, "persistence": persistence, "climatology": climatology}
    names = list(forecasts)
    block = block_length(truth[v.TIME].values, block_days)
    rows: list[dict] = []
    for var in truth.data_vars:
        o = truth[var]
        fields = {m: _aligned(m, ds, o) for m, ds in methods.items()}
        ok = o.notnull()
        for f in fields.values():
            ok = ok & f.notnull()
        w = v.latitude_weights(o["lat"]) if "lat" in o.coords else None
        leads = o[v.LEAD].values if v.LEAD in o.coords else np.arange(o.sizes[v.LEAD])
        # Index-free arrays: every binary op would otherwise re-align the time, lead and grid indexes.
        o = o.where(ok).drop_vars(list(o.coords))
        fields = {m: f.drop_vars(list(f.coords)) for m, f in fields.items()}
        w = None if w is None else w.drop_vars(list(w.coords))
        precip = var in precipitation if precipitation is not None else is_precipitation(str(var), o.attrs)
        native = [threshold_in_units(t, o.attrs.get("units")) for t in thresholds]
        keep = (v.TIME, v.LEAD)
        parts: dict[str, dict[str, xr.Dataset]] = {}
        for name in CONTINUOUS_SCORES:
            kw = {"climatology": fields["climatology"]} if name == "acc" else {}
            parts[name] = {m: v.parts_of(name, f, o, weights=w, preserve_dims=keep, **kw) for m, f in fields.items()}
        if precip:
            # Every threshold (and FSS window) in one pass; each score is finished and bootstrapped once over them.
            counts = {m: v.contingency_counts(f, o, native, keep) for m, f in fields.items()}
            parts.update({s: counts for s in EVENT_SCORES})
            parts["fss"] = {m: fss_parts_all(f, o, native, fss_windows, keep) for m, f in fields.items()}
        scored = {name: _scored(p, lambda q, n=name: v.finish(n, q), names, block, n_boot, seed)
                  for name, p in parts.items()}
        for ref in REFERENCES:
            skill_parts = {m: _with_ref(parts["rmse"][m], parts["rmse"][ref]) for m in methods}
            scored[f"rmse_skill_{ref}"] = _scored(skill_parts, _skill_finish, names, block, n_boot, seed)
        labels = _labels(precip, thresholds, fss_windows) + [(f"rmse_skill_{r}", f"rmse_skill_{r}", {})
                                                             for r in REFERENCES]
        for label, name, at in labels:
            rows += _rows(var, label, scored[name], at, names, leads)
    return pd.DataFrame(rows)


def _aligned(method: str, ds: xr.Dataset, truth: xr.DataArray) -> xr.DataArray:
    """The method's field of truth's variable, refused unless it has truth's dims and index values."""
    if truth.name not in ds.data_vars:
        raise ValueError(f"{method} has no variable {truth.name!r} (it has {list(ds.data_vars)}); "
                         "score forecasts of the same targets")
    f = ds[truth.name]
    if set(f.dims) != set(truth.dims) or any(f.sizes[d] != truth.sizes[d] for d in truth.dims):
        raise ValueError(f"{method}'s {truth.name} has dims {dict(f.sizes)} but the truth has {dict(truth.sizes)}")
    for d in truth.dims:
        if d in truth.indexes and (d not in f.indexes or not f.indexes[d].equals(truth.indexes[d])):
            raise ValueError(f"{method}'s {truth.name} has other {d!r} values than the truth "
                             f"(first {f[d].values[:1]} vs {truth[d].values[:1]}); select the same windows and grid")
    return f.transpose(*truth.dims)


def _scored(parts: Mapping[str, xr.Dataset], finish, names, block, n_boot, seed):
    """Each method's finished score and each later model's paired difference from the first, as NumPy arrays
    with dims (lead, *extra dims)."""
    def arr(da: xr.DataArray) -> np.ndarray:
        return np.asarray(da.transpose(v.LEAD, ...).values)

    base = names[0]
    finished = {m: finish(p.sum(v.TIME)).transpose(v.LEAD, ...) for m, p in parts.items()}
    dims = list(finished[base].dims[1:])
    values = {m: arr(x) for m, x in finished.items()}
    diffs = {}
    for m in names[1:]:
        d = paired_difference(parts[base], parts[m], finish, block, n_boot, seed)
        diffs[m] = {k: arr(getattr(d, k)) for k in ("difference", "low", "high", "significant")}
    return values, diffs, dims


def _rows(var, label, scored, at: Mapping[str, int], names, leads) -> list[dict]:
    values, diffs, dims = scored
    pos = tuple(at[d] for d in dims)
    out = []
    for m, value in values.items():
        for j, lead in enumerate(leads):
            row = {"model": m, "variable": str(var), "lead": _clean(lead), "score": label,
                   "value": float(value[(j, *pos)])}
            if m in diffs:
                d = diffs[m]
                row.update(reference=names[0], **{k: float(d[k][(j, *pos)]) for k in ("difference", "low", "high")},
                           significant=bool(d["significant"][(j, *pos)]))
            out.append(row)
    return out


def _clean(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x.item() if isinstance(x, np.generic) else x


def write_metrics(table: pd.DataFrame, out_dir: str | Path, meta: Mapping | None = None) -> list[Path]:
    """metrics.json ({"meta", "rows"}), metrics.md and metrics.csv in out_dir; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = [{k: _clean(x) for k, x in r.items() if not (isinstance(x, float) and math.isnan(x) and k in
                                                           ("difference", "low", "high"))}
               for r in table.to_dict("records")]
    paths = [out / "metrics.json", out / "metrics.md", out / "metrics.csv"]
    paths[0].write_text(json.dumps({"meta": dict(meta or {}), "rows": records}, indent=1, default=str) + "\n")
    paths[1].write_text(metrics_markdown(table, meta))
    table.to_csv(paths[2], index=False)
    return paths


def markdown_table(header: list[str], rows: list[list[str]], left: set[str] | None = None) -> str:
    """A GitHub Markdown table; the `left` columns (default: the first) are left-aligned, the others right-aligned."""
    left = {header[0]} if left is None else left

    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    rule = "|" + "|".join(":---" if h in left else "---:" for h in header) + "|"
    return "\n".join([line(header), rule, *map(line, rows)])


def _diff_cell(r: pd.Series) -> str:
    if pd.isna(r.get("difference")):
        return ""
    star = "*" if r["significant"] else ""
    return f"{r['difference']:+.4g}{star} [{r['low']:+.3g}, {r['high']:+.3g}]"


def metrics_markdown(table: pd.DataFrame, meta: Mapping | None = None) -> str:
    """One table per variable and lead: a row per score, a column per model, then each model's difference from
    the first with its 95% interval (`*`: the interval excludes 0)."""
    parts = [" ".join(f"{k}: {x}." for k, x in (meta or {}).items())] if meta else []
    models = list(dict.fromkeys(table["model"]))
    others = [m for m in models if m not in REFERENCES][1:]
    base = next(m for m in models if m not in REFERENCES)
    for (var, lead), g in table.groupby(["variable", "lead"], sort=False):
        header = ["score", *models, *(f"{m} − {base} [95%]" for m in others)]
        rows = []
        for label, s in g.groupby("score", sort=False):
            by = s.set_index("model")
            rows.append([label, *(f"{by.loc[m, 'value']:.4g}" for m in models),
                         *(_diff_cell(by.loc[m]) for m in others)])
        parts.append(f"### {var}, lead {lead}\n\n" + markdown_table(header, rows))
    return "\n\n".join(parts) + "\n"


def validation_score(name: str, forecast: xr.DataArray, truth: xr.DataArray, *,
                     persistence: xr.DataArray | None = None, climatology: xr.DataArray | None = None) -> float:
    """One float for a search metric: `rmse`, `mae`, `bias`, `corr`, `acc`, `<pod|far|sr|csi|ets|fbias>@<mm>`,
    `fss@<mm>/<window>` or `rmse_skill_<persistence|climatology>`, pooled over every window, lead and cell.

    Labels as in `score_table` ("csi@10mm" and "csi@10" both work); thresholds are in mm, converted with the
    truth's `units`; weights are the truth's latitude weights, as in the table. `higher_is_better(name)` gives
    the direction to optimise.
    """
    score_name, kw = _parse_metric(name, truth.attrs.get("units"))
    w = v.latitude_weights(truth["lat"]) if "lat" in truth.coords else None
    if score_name.startswith("rmse_skill_"):
        ref = {"persistence": persistence, "climatology": climatology}[score_name[len("rmse_skill_"):]]
        if ref is None:
            raise ValueError(f"metric {name!r} needs the {score_name[11:]} forecast; pass it to validation_score")
        value = v.rmse_skill(forecast, truth, reference=ref, weights=w, preserve_dims=())
    else:
        if score_name == "acc":
            if climatology is None:
                raise ValueError(f"metric {name!r} needs the climatology; pass it to validation_score")
            kw["climatology"] = climatology
        value = v.score(score_name, forecast, truth, weights=w, preserve_dims=(), **kw)
    return float(value)


def higher_is_better(name: str) -> bool:
    """Whether a larger value of metric `name` (as for `validation_score`) is better."""
    score_name, _ = _parse_metric(name, None)
    return score_name.startswith("rmse_skill_") or v.SCORES[score_name].higher_is_better


def _parse_metric(name: str, units: str | None) -> tuple[str, dict]:
    fix = (f"metric {name!r} is not a score; use one of {', '.join(CONTINUOUS_SCORES)}, "
           f"rmse_skill_persistence, rmse_skill_climatology, <{'|'.join(EVENT_SCORES)}>@<mm> (e.g. csi@10) "
           "or fss@<mm>/<window> (e.g. fss@10/5)")
    base, _, rest = name.strip().partition("@")
    if base in CONTINUOUS_SCORES or base in (f"rmse_skill_{r}" for r in REFERENCES):
        if rest:
            raise ValueError(fix)
        return base, {}
    if base not in (*EVENT_SCORES, "fss") or not rest:
        raise ValueError(fix)
    mm, _, window = rest.partition("/")
    try:
        threshold = threshold_in_units(float(mm.removesuffix("mm")), units)
        kw: dict = {"threshold": threshold}
        if base == "fss":
            kw["window"] = int(window)
        elif window:
            raise ValueError(fix)
    except ValueError:
        raise ValueError(fix) from None
    return base, kw
