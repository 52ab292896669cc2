"""Score a checkpoint on a held-out split against persistence and climatology, in physical units.

`evaluate_checkpoint(path, data)` returns the dict `python -m tune.retrain` writes as metrics.json;
`metrics_markdown` turns it into a table; `plot_cases` draws truth / forecast / error maps of a few windows.
Climatology is the calendar-month mean of the target over the training split (months the training split
does not cover fall back to its overall mean, and metrics.json says which).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data_io import DataError, PreparedData, prepare, time_step
from model import checkpoint as ckpt_io
from model.batches import cpu_batches, epoch_order
from model.config import Config
from model.convlstm import ConvLSTMForecaster
from model.device import select_device
from model.metrics import climatology, denormalize
from model.score import Scorer

METHODS = ("model", "persistence", "climatology")


@dataclass
class Loaded:
    model: ConvLSTMForecaster
    config: Config
    data: PreparedData
    device: torch.device
    ckpt: dict


def load_for_evaluation(checkpoint_path: str | Path, data: PreparedData | None = None, device: str = "auto") -> Loaded:
    """The checkpoint's model in eval mode, and the data it was trained on (read again from its config if None)."""
    ckpt = ckpt_io.load(checkpoint_path)
    config = ckpt_io.config_from_checkpoint(ckpt)
    if data is None:
        data = prepare(config.data)
    _check_same_normalisation(data, ckpt, checkpoint_path)
    dev = select_device(device)
    model = ckpt_io.model_from_checkpoint(ckpt).to(dev).eval()
    return Loaded(model, config, data, dev, ckpt)


def _check_same_normalisation(data: PreparedData, ckpt: dict, path: str | Path) -> None:
    in_stats, tgt_stats = ckpt_io.stats_from_checkpoint(ckpt)
    for mine, theirs, what in ((data.input_stats, in_stats, "input"), (data.target_stats, tgt_stats, "target")):
        if list(mine.channels) != list(theirs.channels) or not np.allclose(mine.mean, theirs.mean, equal_nan=True):
            raise DataError(
                f"{path}: the data's {what} channels or normalisation differ from the checkpoint's "
                f"({mine.channels} vs {theirs.channels}); evaluate on the file and config the model was trained with"
            )


def calendar_months(times: np.ndarray) -> np.ndarray:
    """1..12 for numpy datetime64 or cftime time stamps."""
    if np.issubdtype(times.dtype, np.datetime64):
        return times.astype("datetime64[M]").astype(np.int64) % 12 + 1
    return np.array([t.month for t in times], dtype=np.int64)


def monthly_climatology(data: PreparedData) -> tuple[np.ndarray, list[int]]:
    """(12, target channel, lat, lon) calendar-month means of the training split in physical units, and the
    months it does not cover (filled with the training split's overall mean)."""
    a, b = data.splits["train"]
    if b <= a:
        raise DataError("climatology needs the training split, but this data has none; "
                        "evaluate on the file the model was trained on (prepared without given statistics)")
    phys = denormalize(np.asarray(data.targets[a:b]), data.target_stats)
    clim = climatology(phys, calendar_months(data.times[a:b]) - 1, 12)
    overall = climatology(phys, np.zeros(b - a, dtype=np.int64), 1)
    missing = [m + 1 for m in range(12) if not np.isfinite(clim[m]).any()]
    return np.where(np.isfinite(clim), clim, overall), missing


def _valid_indices(starts: np.ndarray, data: PreparedData) -> np.ndarray:
    """(windows, lead) time indices of the forecast steps of windows starting at `starts`."""
    c = data.config
    return starts[:, None] + c.window_size - 1 + c.target_offset + np.arange(c.forecast_steps)[None, :]


def scorer(loaded: Loaded) -> Scorer:
    """The scorer of every evaluation: model, persistence and climatology on the same points, on the CPU."""
    data = loaded.data
    return Scorer(data.target_stats, data.lat, data.config.forecast_steps, torch.device("cpu"),
                  references=METHODS[1:], same_points=True)


@torch.no_grad()
def forecasts(loaded: Loaded, starts: np.ndarray, batch_size: int):
    """Per batch: (starts, normalised forecast, batch) on the CPU; Scorer.physical turns them into units."""
    batches = epoch_order(starts, False, 0, 0, batch_size)
    for idx, b in zip(batches, cpu_batches(loaded.data, batches, 0, False)):
        up = b["up"].to(loaded.device) if "up" in b else None
        yield idx, loaded.model(b["x"].to(loaded.device), up).float().cpu(), b


def evaluate_checkpoint(
    checkpoint_path: str | Path, data: PreparedData | None = None, device: str = "auto", split: str = "test"
) -> dict:
    """Latitude-weighted RMSE and MAE per target channel and lead, physical units, for model/persistence/climatology.

    All three are scored on the same points: where the truth, the persistence value and the climatology exist.
    """
    loaded = load_for_evaluation(checkpoint_path, data, device)
    data = loaded.data
    starts = data.starts(split)
    if len(starts) == 0:
        raise DataError(f"the {split} split of {data.config.data} holds no complete window; "
                        "use a longer file or lower --val-ratio / --train-ratio")
    clim, missing = monthly_climatology(data)
    months = calendar_months(data.times) - 1
    missing = sorted(set(missing) & set((months[_valid_indices(starts, data)] + 1).ravel().tolist()))
    scores = scorer(loaded)
    for idx, pred, batch in forecasts(loaded, starts, loaded.config.train.batch_size):
        clim_fc = torch.as_tensor(clim[months[_valid_indices(idx, data)]], dtype=torch.float32)
        scores.add(pred, batch, {"climatology": clim_fc})
    first, last = _valid_indices(starts[[0, -1]], data)[[0, 1], [0, -1]]
    hours = _step_hours(data.times)
    lead_steps = [data.config.target_offset + j for j in range(data.config.forecast_steps)]
    return {
        "checkpoint": str(checkpoint_path),
        "epoch": int(loaded.ckpt["epoch"]),
        "split": split,
        "windows": int(len(starts)),
        "valid_times": [_time_str(data.times[first]), _time_str(data.times[last])],
        "lead_steps": lead_steps,
        "lead_hours": [s * hours for s in lead_steps] if hours else None,
        "latitude_weighted": True,
        "climatology": {"kind": "calendar-month mean of the training split",
                        "months_without_training_data": missing},
        "channels": {
            name: {
                "units": data.target_attrs.get(name.split("@")[0], {}).get("units", ""),
                "rmse": {m: scores.rmse(m)[:, k].tolist() for m in METHODS},
                "mae": {m: scores.mae(m)[:, k].tolist() for m in METHODS},
            }
            for k, name in enumerate(data.target_channels)
        },
    }


def _step_hours(times: np.ndarray) -> float | None:
    if len(times) < 2:
        return None
    return float(time_step(times) / np.timedelta64(1, "h"))


def _time_str(t) -> str:
    return str(np.datetime_as_string(t, unit="m")) if isinstance(t, np.datetime64) else str(t)


def markdown_table(header: list[str], rows: list[list[str]], left: set[str] | None = None) -> str:
    """A GitHub Markdown table; the `left` columns (default: the first) are left-aligned, the others right-aligned."""
    left = {header[0]} if left is None else left

    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    rule = "|" + "|".join(":---" if h in left else "---:" for h in header) + "|"
    return "\n".join([line(header), rule, *map(line, rows)])


def metrics_markdown(metrics: dict) -> str:
    """One table per target channel: a row per lead, RMSE then MAE of each method; the best of each in bold."""
    hours = metrics["lead_hours"]
    leads = [f"+{h:g} h" for h in hours] if hours else [f"+{s} step" for s in metrics["lead_steps"]]
    missing = metrics["climatology"]["months_without_training_data"]
    parts = [
        f"{metrics['split'].capitalize()} split: {metrics['windows']} windows, valid {metrics['valid_times'][0]} .. "
        f"{metrics['valid_times'][1]}; checkpoint {Path(metrics['checkpoint']).name} (epoch {metrics['epoch']}). "
        "Latitude-weighted, physical units. Climatology: calendar-month mean of the training split"
        + (f"; {', '.join(calendar.month_name[m] for m in missing)} not in it, so its overall mean there."
           if missing else ".")
    ]
    for name, ch in metrics["channels"].items():
        header = ["lead"] + [f"{m} {s.upper()}" for s in ("rmse", "mae") for m in METHODS]
        rows = []
        for j, lead in enumerate(leads):
            row = [lead]
            for score in ("rmse", "mae"):
                values = [ch[score][m][j] for m in METHODS]
                best = np.nanmin(values) if np.isfinite(values).any() else None
                row += [f"**{v:.4g}**" if v == best else f"{v:.4g}" for v in values]
            rows.append(row)
        units = f" ({ch['units']})" if ch["units"] else ""
        parts.append(f"### {name}{units}\n\n" + markdown_table(header, rows))
    return "\n\n".join(parts) + "\n"


def plot_cases(
    checkpoint_path: str | Path, data: PreparedData | None, out_dir: str | Path, n_cases: int = 3,
    device: str = "auto", split: str = "test",
) -> list[Path]:
    """PNG maps of truth, forecast and error (forecast - truth) at the first lead, for n windows across the split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loaded = load_for_evaluation(checkpoint_path, data, device)
    data = loaded.data
    starts = data.starts(split)
    if len(starts) == 0 or n_cases < 1:
        return []
    starts = starts[np.unique(np.linspace(0, len(starts) - 1, n_cases).round().astype(int))]
    idx, pred_z, batch = next(forecasts(loaded, starts, len(starts)))
    pred, truth, _ = scorer(loaded).physical(pred_z, batch)
    valid = _valid_indices(idx, data)[:, 0]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(len(idx)):
        n_ch = len(data.target_channels)
        fig, axes = plt.subplots(n_ch, 3, figsize=(13, 3.8 * n_ch), squeeze=False, constrained_layout=True)
        for k, name in enumerate(data.target_channels):
            t, f = truth[i, 0, k].numpy(), pred[i, 0, k].numpy()
            units = data.target_attrs.get(name.split("@")[0], {}).get("units", "")
            both = np.concatenate([t.ravel(), f.ravel()])
            lo, hi = float(np.nanmin(both)), float(np.nanmax(both))
            err = f - t
            emax = float(np.nanmax(np.abs(err))) or 1.0
            for ax, arr, title, kw in (
                (axes[k, 0], t, f"{name} truth", {"vmin": lo, "vmax": hi, "cmap": "viridis"}),
                (axes[k, 1], f, f"{name} forecast", {"vmin": lo, "vmax": hi, "cmap": "viridis"}),
                (axes[k, 2], err, "error (forecast - truth)", {"vmin": -emax, "vmax": emax, "cmap": "RdBu_r"}),
            ):
                mesh = ax.pcolormesh(data.lon, data.lat, arr, shading="nearest", **kw)
                fig.colorbar(mesh, ax=ax, label=units)
                ax.set_title(title)
                ax.set_xlabel("longitude")
                ax.set_ylabel("latitude")
        init = _time_str(data.times[idx[i] + data.config.window_size - 1])
        fig.suptitle(f"{split} case {i + 1}: initialised {init}, valid {_time_str(data.times[valid[i]])}")
        path = out_dir / f"case_{i + 1}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths
