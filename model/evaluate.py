"""Score checkpoints side by side against persistence and climatology, in physical units:
python -m model.evaluate --checkpoint a/best.pt --checkpoint b/best.pt --name base --name deep --data F

`evaluate(EvalConfig(...))` is the one evaluation (this CLI and python -m tune.retrain): every checkpoint's
forecasts of the test split (or of the windows initialised in --start-time..--end-time) become xarray fields with
dims (time, lead, lat, lon) per target variable, scored by model.verify_table.score_table (RMSE, MAE, bias,
correlation, ACC, skill scores; POD/FAR/CSI/ETS/frequency bias and FSS for precipitation; block-bootstrap
intervals of each model's difference from the first), written as metrics.json, metrics.md, metrics.csv and plots.
Climatology is the calendar-month mean of the target over the training split (months the training split
does not cover fall back to its overall mean, and the metadata says which).
`evaluate_checkpoint(path, data)` is the plain RMSE/MAE-per-lead summary of one checkpoint on the Scorer.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from data_io import ConfigError, DataError, PreparedData, prepare, time_step
from data_io.windows import window_starts
from model import checkpoint as ckpt_io
from model import verify_plots as plots
from model._fields import field_array
from model.batches import cpu_batches, epoch_order
from model.config import Config
from model.convlstm import ConvLSTMForecaster
from model.device import select_device
from model.metrics import climatology, denormalize
from model.score import Scorer
from model import verify as v
from model import verify_table as vt

METHODS = ("model", "persistence", "climatology")
log = logging.getLogger("convlstm")


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


# --- the evaluation of several checkpoints: python -m model.evaluate ------------------------------------------

@dataclass
class EvalConfig:
    """Options of python -m model.evaluate (and of the retrain's scoring); flags are generated from these fields."""

    checkpoint: list[str] = field(
        default_factory=list, metadata={"help": "checkpoint to score (.pt); repeat for several models", "repeat": True})
    name: list[str] | None = field(
        default=None, metadata={"help": "a name per --checkpoint, in order (default: each checkpoint's folder name)",
                                "repeat": True})
    data: str | None = field(
        default=None, metadata={"help": "data to score on, as the trainer's --data takes it (default: the first "
                                        "checkpoint's training data); read with each checkpoint's own data config"})
    start_time: str | None = field(
        default=None, metadata={"help": "score the windows initialised at or after this time (e.g. 2020-07-01) "
                                        "instead of --split"})
    end_time: str | None = field(default=None, metadata={"help": "... and at or before this time"})
    split: Literal["train", "val", "test"] = field(default="test", metadata={"help": "windows scored without a period"})
    output_dir: str = field(default="runs/evaluate", metadata={"help": "metrics.json, metrics.md, CSV and plots"})
    rain_thresholds: list[float] = field(
        default_factory=lambda: list(v.RAIN_THRESHOLDS_MM),
        metadata={"help": "precipitation thresholds in mm per step for POD/FAR/CSI/ETS/frequency bias and FSS"})
    fss_windows: list[int] = field(
        default_factory=lambda: list(v.FSS_WINDOWS), metadata={"help": "FSS neighbourhood sizes in grid cells"})
    block_days: float = field(
        default=5.0, metadata={"help": "bootstrap block length in days (consecutive windows resampled together)"})
    bootstrap_samples: int = field(default=1000, metadata={"help": "bootstrap replicates of each difference"})
    format: Literal["png", "pdf", "svg"] = field(default="png", metadata={"help": "plot file format"})
    dpi: int = field(default=100, metadata={"help": "plot resolution"})
    cases: int = field(default=3, metadata={"help": "windows drawn as truth / forecast / error maps (0 = none)"})
    batch_size: int = field(default=8, metadata={"help": "windows per forward pass"})
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"


def _check(cfg: EvalConfig) -> list[str]:
    """The models' names; a ConfigError naming the flag for anything the evaluation cannot use."""
    if not cfg.checkpoint:
        raise ConfigError("--checkpoint is required: pass the checkpoint(s) to score, e.g. --checkpoint run/best.pt")
    for path in cfg.checkpoint:
        if not Path(path).is_file():
            raise ConfigError(f"--checkpoint {path}: no such file")
    names = cfg.name or _default_names(cfg.checkpoint)
    if len(names) != len(cfg.checkpoint):
        raise ConfigError(f"--name: {len(names)} names for {len(cfg.checkpoint)} checkpoints; give one per "
                          "--checkpoint, in order")
    if len(set(names)) != len(names) or set(names) & set(vt.REFERENCES):
        raise ConfigError(f"--name {' '.join(names)}: names must differ from each other and from "
                          f"{', '.join(vt.REFERENCES)}")
    if not cfg.rain_thresholds or min(cfg.rain_thresholds) <= 0:
        raise ConfigError(f"--rain-thresholds must be positive mm values, but got {cfg.rain_thresholds}")
    if not cfg.fss_windows or min(cfg.fss_windows) < 1:
        raise ConfigError(f"--fss-windows must be positive cell counts, but got {cfg.fss_windows}")
    for flag, value, low in (("--block-days", cfg.block_days, 0), ("--bootstrap-samples", cfg.bootstrap_samples, 0),
                             ("--batch-size", cfg.batch_size, 0), ("--dpi", cfg.dpi, 9), ("--cases", cfg.cases, -1)):
        if value <= low:
            raise ConfigError(f"{flag} must be more than {low}, but got {value}")
    return names


def _default_names(paths: list[str]) -> list[str]:
    folders = [Path(p).resolve().parent.name or Path(p).stem for p in paths]
    return folders if len(set(folders)) == len(folders) else [f"{f}_{i + 1}" for i, f in enumerate(folders)]


def _load_all(cfg: EvalConfig, data: PreparedData | None) -> list[Loaded]:
    """Each checkpoint with its data, read once per distinct data config (--data over the checkpoint's file)."""
    prepared: dict[str, PreparedData] = {}
    out = []
    for path in cfg.checkpoint:
        config = ckpt_io.config_from_checkpoint(ckpt_io.load(path))
        dc = replace(config.data, data=cfg.data or config.data.data)
        key = json.dumps(asdict(dc), sort_keys=True, default=str)
        if key not in prepared:
            prepared[key] = data if data is not None and not prepared else prepare(dc)
        out.append(load_for_evaluation(path, prepared[key], cfg.device))
    first = out[0].data
    for path, ld in zip(cfg.checkpoint[1:], out[1:]):
        c, f = ld.data.config, first.config
        same = (c.window_size, c.target_offset, c.forecast_steps) == (f.window_size, f.target_offset, f.forecast_steps)
        if not same or len(ld.data.times) != len(first.times) or (ld.data.times != first.times).any():
            raise ConfigError(f"--checkpoint {path}: its windows (window {c.window_size}, offset {c.target_offset}, "
                              f"{c.forecast_steps} leads over {len(ld.data.times)} times) differ from "
                              f"{cfg.checkpoint[0]}'s; evaluate models of the same forecast layout together")
    return out


def _windows(cfg: EvalConfig, data: PreparedData) -> tuple[np.ndarray, str]:
    """Window starts to score and how they were chosen."""
    if cfg.start_time is None and cfg.end_time is None:
        starts, what = data.starts(cfg.split), f"{cfg.split} split"
    else:
        starts = window_starts((0, len(data.times)), data.config)
        init = data.times[starts + data.config.window_size - 1]
        try:
            keep = np.ones(len(starts), bool)
            if cfg.start_time is not None:
                keep &= init >= np.datetime64(cfg.start_time)
            if cfg.end_time is not None:
                keep &= init <= np.datetime64(cfg.end_time)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"--start-time/--end-time {cfg.start_time}..{cfg.end_time}: not a time this data's "
                              f"calendar compares with ({exc}); use e.g. 2020-07-01 or 2020-07-01T12") from None
        starts, what = starts[keep], f"windows initialised in {cfg.start_time or '...'}..{cfg.end_time or '...'}"
        a, b = data.splits["train"]
        if (starts + data.config.window_size - 1 < b).any():
            log.warning("Some windows of the period lie in the training split: their scores are in-sample")
    if len(starts) == 0:
        raise DataError(f"{data.config.data}: no complete window to score in the {what}; widen the period or use "
                        "a longer file")
    return starts, what


def _fields(models: list[Loaded], names: list[str], starts: np.ndarray, batch_size: int):
    """(forecasts per name, truth, persistence, climatology) as xarray Datasets of the targets all models share."""
    data = models[0].data
    channels = [c for c in data.target_channels if all(c in m.data.target_channels for m in models)]
    if not channels:
        raise ConfigError("--checkpoint: the models share no target variable; evaluate models of the same targets")
    n, c = data.config, len(starts)
    shape = (c, n.forecast_steps, len(channels), *data.grid_shape)
    phys = {name: np.empty(shape, np.float32) for name in (*names, "truth", "persistence")}
    for name, ld in zip(names, models):
        cols = [ld.data.target_channels.index(ch) for ch in channels]
        sc, at = scorer(ld), 0
        for idx, pred, batch in forecasts(ld, starts, batch_size):
            f, o, p = (x[:, :, cols].numpy() for x in sc.physical(pred, batch))
            phys[name][at:at + len(idx)] = f
            if name == names[0]:
                phys["truth"][at:at + len(idx)], phys["persistence"][at:at + len(idx)] = o, p
            at += len(idx)
    clim, missing = monthly_climatology(data)
    months = calendar_months(data.times) - 1
    phys["climatology"] = clim[months[_valid_indices(starts, data)]][:, :, [data.target_channels.index(ch)
                                                                            for ch in channels]]
    hours = _step_hours(data.times)
    steps = [n.target_offset + j for j in range(n.forecast_steps)]
    leads = [int(s * hours) if float(s * hours).is_integer() else s * hours for s in steps] if hours else steps
    init = data.times[starts + n.window_size - 1]

    def dataset(values: np.ndarray):
        import xarray as xr

        return xr.Dataset({ch: field_array(values[:, :, k], data.lat, data.lon, name=ch, times=init, leads=leads,
                                           attrs=data.target_attrs.get(ch.split("@")[0], {}))
                           for k, ch in enumerate(channels)})

    sets = {k: dataset(a) for k, a in phys.items()}
    lead_unit = "hours" if hours else "steps"
    return ({m: sets[m] for m in names}, sets["truth"], sets["persistence"], sets["climatology"],
            {"lead_unit": lead_unit, "climatology_months_missing": sorted(set(missing) & set(months[
                _valid_indices(starts, data)].ravel() + 1))})


def evaluate(cfg: EvalConfig, data: PreparedData | None = None, about: dict | None = None) -> pd.DataFrame:
    """Score the checkpoints, persistence and climatology; write metrics.json/.md/.csv and the plots into
    cfg.output_dir; print the Markdown tables. `data`: the first checkpoint's prepared data, when at hand;
    `about`: entries put first in the files' metadata (e.g. where the config came from)."""
    names = _check(cfg)
    models = _load_all(cfg, data)
    starts, what = _windows(cfg, models[0].data)
    log.info("Scoring %s on %d windows (%s)", ", ".join(names), len(starts), what)
    fcs, truth, persistence, clim, extra = _fields(models, names, starts, cfg.batch_size)
    windows = [w for w in cfg.fss_windows if w <= min(models[0].data.grid_shape)]
    if len(windows) < len(cfg.fss_windows):
        log.warning("FSS windows %s are larger than the %dx%d grid: left out", sorted(set(cfg.fss_windows) -
                    set(windows)), *models[0].data.grid_shape)
    try:
        table = vt.score_table(fcs, truth, persistence, clim, cfg.rain_thresholds, windows or [1],
                               block_days=cfg.block_days, n_boot=cfg.bootstrap_samples)
    except ValueError as exc:
        raise ConfigError(f"--checkpoint {' '.join(cfg.checkpoint)}: {exc}") from None
    d = models[0].data
    meta = {**(about or {}), "scored": f"{len(starts)} windows, {what}", "data": str(d.config.data),
            "checkpoints": dict(zip(names, cfg.checkpoint)),
            "epochs": {n: int(m.ckpt["epoch"]) for n, m in zip(names, models)},
            "lead": extra["lead_unit"], "weights": "cos(latitude) for continuous scores; cells for events and FSS",
            "climatology": "calendar-month mean of the training split",
            "climatology_months_missing": extra["climatology_months_missing"],
            "intervals": f"95% block bootstrap ({cfg.block_days:g}-day blocks, {cfg.bootstrap_samples} replicates) "
                         f"of each model minus {names[0]}; * = excludes 0"}
    out = Path(cfg.output_dir)
    written = vt.write_metrics(table, out, meta)
    print(vt.metrics_markdown(table, meta))
    figures = plots.plot_skill_vs_lead(table, out / "plots", fmt=cfg.format, dpi=cfg.dpi)
    figures += plots.plot_performance_diagrams(table, out / "plots", fmt=cfg.format, dpi=cfg.dpi)
    if cfg.cases:
        cases = sorted(set(np.linspace(0, len(starts) - 1, min(cfg.cases, len(starts))).round().astype(int)))
        for var in truth.data_vars:
            figures += plots.plot_case_maps(truth[var], {m: ds[var] for m, ds in fcs.items()}, cases,
                                            out / "maps", fmt=cfg.format, dpi=cfg.dpi)
    log.info("Wrote %s and %d figures in %s", ", ".join(p.name for p in written), len(figures), out)
    return table


def parser(prog: str = "python -m model.evaluate") -> argparse.ArgumentParser:
    from model._cli import add_dataclass_flags

    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_flags(p, EvalConfig)
    return p


def main(argv: list[str] | None = None, prog: str = "python -m model.evaluate") -> None:
    from model._cli import build
    from model._main import run_cli, setup_logging

    def run() -> int:
        cfg = build(EvalConfig, vars(parser(prog).parse_args(argv)), "flags")
        _check(cfg)  # before the log file: a refused command leaves no folder behind
        setup_logging(Path(cfg.output_dir) / "evaluate.log")
        evaluate(cfg)
        return 0

    run_cli(run, prog)


if __name__ == "__main__":
    main()
