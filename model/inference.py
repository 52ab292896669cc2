"""graphcast's inference command, on this project's code: python run_inference_convlstm.py --checkpoint best.pt
--data F.nc --output-dir out/ [--start-time T --end-time T | --specific-times T ...] [--rolling-steps N]
[--compare-checkpoint B.pt --exp1-name A --exp2-name B] [--visualize].

Forecasts come from model.predict (one CF file, dims forecast_reference_time x forecast_period); with no time flag
every window of --data is forecast, as graphcast does. --compare-checkpoint scores both models, plus persistence
and a climatology (the mean of --data over its time steps), with model.verify_table into out/metrics.*.
The region and window flags are graphcast's "must match training": the checkpoint carries them, so they are
checked against it. --normalizer and --model-type (and their --compare- twins) are carried by the checkpoint too.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

import numpy as np
import xarray as xr

from data_io import ConfigError, DataConfig, DataError
from model import checkpoint as ckpt_io
from model._cli import add_dataclass_flags, build
from model._main import run_cli, setup_logging
from model.period import ForecastConfig, check
from model.predict import predict_config, write_netcdf

log = logging.getLogger("convlstm")
PROG = "run_inference_convlstm.py"
# graphcast's flags that the checkpoint now carries: accepted, and named in one log line.
OBSOLETE = ("normalizer", "model_type", "compare_normalizer", "compare_model_type", "compare_upstream")
# graphcast's "must match the training configuration" flags: DataConfig's own fields, checked against the checkpoint.
MATCHED = ("include_upstream", "window_size", "target_offset", "downstream_lat_min", "downstream_lat_max",
           "downstream_lon_min", "downstream_lon_max", "upstream_lat_min", "upstream_lat_max", "upstream_lon_min",
           "upstream_lon_max")


@dataclass
class InferenceOptions:
    output_dir: str | None = field(default=None, metadata={"help": "folder for predictions, metrics and plots"})
    compare_checkpoint: str | None = field(default=None, metadata={"help": "a second checkpoint to compare"})
    exp1_name: str = field(default="Experiment 1", metadata={"help": "name of --checkpoint's model in the table"})
    exp2_name: str = field(default="Experiment 2", metadata={"help": "name of --compare-checkpoint's model"})
    visualize: bool = field(default=False, metadata={"help": "truth / forecast / error maps of a few forecasts"})
    viz_format: Literal["png", "pdf", "svg"] = "png"
    viz_dpi: int = 150
    viz_vmin: float = field(default=0.0, metadata={"help": "colour scale minimum of the maps"})
    viz_vmax: float = field(default=500.0, metadata={"help": "colour scale maximum of the maps"})
    viz_timesteps: list[int] | None = field(
        default=None, metadata={"help": "indices of the forecasts (initialisations) to draw (default: the first 5)"})
    save_predictions: bool = field(default=True, metadata={"help": "write the forecasts as CF netCDF"})
    predictions_filename: str = "predictions.nc"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    normalizer: str | None = field(default=None, metadata={"help": "ignored: the checkpoint carries its statistics"})
    model_type: str | None = field(default=None, metadata={"help": "ignored: the checkpoint carries its model"})
    compare_normalizer: str | None = field(default=None, metadata={"help": "ignored, as --normalizer"})
    compare_model_type: str | None = field(default=None, metadata={"help": "ignored, as --model-type"})
    compare_upstream: bool = field(default=False, metadata={"help": "ignored: the checkpoint says so"})


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    add_dataclass_flags(p, ForecastConfig, exclude={"init_time"})
    add_dataclass_flags(p, InferenceOptions)
    add_dataclass_flags(p, DataConfig, exclude={f.name for f in fields(DataConfig)} - set(MATCHED))
    return p


def _split(args: argparse.Namespace) -> tuple[ForecastConfig, InferenceOptions, dict]:
    given = vars(args)
    pick = {cls: {f.name for f in fields(cls)} for cls in (ForecastConfig, InferenceOptions)}
    forecast = build(ForecastConfig, {k: v for k, v in given.items() if k in pick[ForecastConfig]}, "flags")
    options = build(InferenceOptions, {k: v for k, v in given.items() if k in pick[InferenceOptions]}, "flags")
    return forecast, options, {k: v for k, v in given.items() if k in MATCHED}


def main(argv: list[str] | None = None) -> None:
    def _run() -> int:
        forecast, options, matched = _split(parser().parse_args(argv))
        if not options.output_dir:
            raise ConfigError("--output-dir is required")
        out = Path(options.output_dir)
        setup_logging(out / "inference.log", getattr(logging, options.log_level))
        check(forecast)
        obsolete = [f"--{n.replace('_', '-')}" for n in OBSOLETE if getattr(options, n)]
        if obsolete:
            log.info("%s: not needed any more, ignored (the checkpoint carries its model and normalisation)",
                     ", ".join(obsolete))
        _check_matches(forecast.checkpoint, matched)
        if options.compare_checkpoint:
            _check_matches(options.compare_checkpoint, matched, "--compare-checkpoint")
            if options.exp2_name == options.exp1_name:
                raise ConfigError(f"--exp2-name {options.exp2_name!r} is --exp1-name's; give the models two names")
        fc = predict_config(forecast, every=True)
        if options.save_predictions:
            log.info("Wrote %s", write_netcdf(fc, out / options.predictions_filename))
        forecasts = {options.exp1_name: fc}
        if options.compare_checkpoint:
            other = predict_config(replace(forecast, checkpoint=options.compare_checkpoint), every=True)
            forecasts[options.exp2_name] = other
            if options.save_predictions:
                stem = Path(options.predictions_filename)
                log.info("Wrote %s", write_netcdf(other, out / f"{stem.stem}_{_safe(options.exp2_name)}{stem.suffix}"))
            for path in compare(forecasts, str(forecast.data), out):
                log.info("Wrote %s", path)
        if options.visualize:
            for path in visualize(forecasts, str(forecast.data), out, options):
                log.info("Wrote %s", path)
        return 0

    run_cli(_run, PROG)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _check_matches(checkpoint: str | None, matched: dict, flag: str = "--checkpoint") -> None:
    """graphcast's region/window flags must equal the training config, which the checkpoint now carries."""
    if not matched or not checkpoint:
        return
    trained = ckpt_io.config_from_checkpoint(ckpt_io.load(checkpoint)).data
    for name, value in matched.items():
        if getattr(trained, name) != value:
            opt = "--" + name.replace("_", "-")
            shown = "" if isinstance(value, bool) else f" {value}"
            raise ConfigError(f"{opt}{shown}: {flag} {checkpoint} was trained with {name} = {getattr(trained, name)} "
                              f"and forecasts with that; drop {opt} or pass the trained value")


# ---- comparison and maps: thin glue over model.verify_table and model.verify_plots ------------------------
def _by_channel(fc: xr.Dataset) -> xr.Dataset:
    """One (time = initialisation, lead, lat, lon) variable per channel: levels become "TEM@850"."""
    out = {}
    for name, da in fc.data_vars.items():
        extra = [d for d in da.dims if d not in ("forecast_reference_time", "forecast_period", "lat", "lon")]
        for sel in ([{}] if not extra else [{extra[0]: v} for v in da[extra[0]].values]):
            key = name if not sel else f"{name}@{next(iter(sel.values())):g}"
            out[key] = da.sel(sel).drop_vars(extra, errors="ignore")
    ds = xr.Dataset(out).drop_vars("time", errors="ignore")
    ds = ds.rename({"forecast_reference_time": "time", "forecast_period": "lead"})
    return ds.assign_coords(lead=ds["lead"].values / np.timedelta64(1, "h"))  # the table's leads, in hours


def observed(fc: xr.Dataset, data: str | list[str]) -> tuple[tuple[xr.Dataset, xr.Dataset, xr.Dataset], xr.Dataset]:
    """(truth at each forecast's valid times, persistence = the value at initialisation, the mean of `data` over
    its time steps), per channel on the forecast's grid, for the forecasts whose valid times `data` holds; and
    those forecasts."""
    frt, lead = "forecast_reference_time", "forecast_period"
    if isinstance(data, list):
        raise ConfigError(f"--compare-checkpoint scores against one --data file, but got {len(data)}; give one")
    with xr.open_dataset(data) as src:
        inside = np.isin(fc["time"].values, src["time"].values).all(axis=1)
        if not inside.any():
            raise DataError(f"--data {data}: holds none of the forecasts' valid times, so they cannot be scored; "
                            "pick earlier times (--end-time) or a longer file")
        fc = fc.isel({frt: np.flatnonzero(inside)})
        grid = src[list(fc.data_vars)].sel(lat=fc["lat"].values, lon=fc["lon"].values, method="nearest").load()
    grid = grid.assign_coords(lat=fc["lat"].values, lon=fc["lon"].values)
    at = {frt: fc[frt].values, lead: fc[lead].values}
    truth = grid.sel(time=xr.DataArray(fc["time"].values, dims=(frt, lead))).drop_vars("time").assign_coords(at)
    first = grid.sel(time=xr.DataArray(at[frt], dims=frt)).drop_vars("time").assign_coords({frt: at[frt]})
    # Variable by variable: a Dataset's broadcast_like would give precipitation the level dim of TEM.
    persistence = xr.Dataset({v: first[v].broadcast_like(truth[v]) for v in truth.data_vars})
    climatology = xr.Dataset({v: grid[v].mean("time").broadcast_like(truth[v]) for v in truth.data_vars})
    return tuple(_by_channel(xr.Dataset({v: x[v].transpose(*fc[v].dims) for v in fc.data_vars}))
                 for x in (truth, persistence, climatology)), fc


def compare(forecasts: dict[str, xr.Dataset], data: str, out: Path) -> list[Path]:
    from model.verify import FSS_WINDOWS
    from model.verify_table import score_table, write_metrics

    first = next(iter(forecasts.values()))
    (truth, persistence, climatology), kept = observed(first, data)
    times = kept["forecast_reference_time"].values
    fields = {n: _by_channel(f.sel(forecast_reference_time=times)) for n, f in forecasts.items()}
    cells = min(truth.sizes["lat"], truth.sizes["lon"])
    windows = [w for w in FSS_WINDOWS if w <= cells]  # a regional grid may be smaller than the widest window
    try:
        table = score_table(fields, truth, persistence, climatology, fss_windows=windows)
    except ValueError as exc:
        raise ConfigError(f"--compare-checkpoint: {exc}; compare models with the same targets and grid") from None
    meta = {"data": data, "initialisations": len(times), "models": list(forecasts),
            "climatology": f"mean of {data} over its time steps (no training split here)"}
    return write_metrics(table, out, meta)


def visualize(forecasts: dict[str, xr.Dataset], data: str, out: Path, options: InferenceOptions) -> list[Path]:
    """model.verify_plots' truth / forecast / error maps of the precipitation-like channels (else the first)."""
    from model.verify_plots import plot_case_maps
    from model.verify_table import is_precipitation

    first = next(iter(forecasts.values()))
    (truth, _, _), kept = observed(first, data)
    times = kept["forecast_reference_time"].values
    fields = {n: _by_channel(f.sel(forecast_reference_time=times)) for n, f in forecasts.items()}
    names = [v for v in truth.data_vars if is_precipitation(str(v), truth[v].attrs)]
    scale = (options.viz_vmin, options.viz_vmax) if names else (None, None)  # graphcast's scale is in mm
    names = names or [next(iter(truth.data_vars))]
    cases = options.viz_timesteps if options.viz_timesteps is not None else list(range(min(5, len(times))))
    bad = [c for c in cases if not 0 <= c < len(times)]
    if bad:
        raise ConfigError(f"--viz-timesteps {bad[0]}: there are {len(times)} scored forecasts; "
                          f"pick indices 0..{len(times) - 1}")
    paths: list[Path] = []
    for name in names:
        paths += plot_case_maps(truth[name], {n: f[name] for n, f in fields.items()}, cases, out / "maps",
                                fmt=options.viz_format, dpi=options.viz_dpi, vmin=scale[0], vmax=scale[1])
    return paths
