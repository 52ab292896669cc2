"""Review a search: python -m tune.report runs/<name> [--sort COL] [--status S ..] [--top N] [--format F] [--plots DIR]

Reads the experiment folder itself (Ray's params.json / result.json per trial), so it works while the search
runs, on a folder copied from another machine, and without optuna.db (only the importance plot needs it).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from data_io import ConfigError
from model._main import run_cli
from model.verify_table import markdown_table
from tune import _objective
from tune._table import COLUMNS, _missing, columns, format_table, formatted, load_trials
from tune.experiment import OPTUNA_DB, Experiment
from tune.outcome import FITTED, Outcome

FORMATS = ("table", "csv", "markdown", "html", "json")
STATUSES = tuple(o.flag for o in Outcome)
TEXT_COLUMNS = {"trial_id", "status", "baseline", "device", "hidden_channels"}


def parser(prog: str = "python -m tune.report") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument("experiment", help="the search's folder: STORAGE_PATH/NAME (holds search.yaml and the trials)")
    p.add_argument("--sort", default="val_loss", metavar="COLUMN",
                   help=f"one of {', '.join(COLUMNS)} (default: val_loss)")
    p.add_argument("--descending", action="store_true", help="sort largest first")
    p.add_argument("--status", nargs="+", metavar="STATUS", help=f"keep only these: {', '.join(STATUSES)}")
    p.add_argument("--pareto", action="store_true",
                   help="keep only the Pareto set of the search's --objective (the trials no other trial beats on "
                        "every objective)")
    p.add_argument("--top", type=int, metavar="N", help="keep the first N rows after sorting and filtering")
    p.add_argument("--format", default="table", choices=FORMATS)
    p.add_argument("--output", metavar="FILE", help="write the table here instead of printing it")
    p.add_argument("--plots", metavar="DIR", help="write PNG plots of every trial here")
    return p


def main(argv: list[str] | None = None, prog: str = "python -m tune.report") -> None:
    run_cli(lambda: run(argv, prog), prog)


def run(argv: list[str] | None = None, prog: str = "python -m tune.report") -> int:
    ns = parser(prog).parse_args(argv)
    experiment = Path(ns.experiment)
    trials = load_experiment(experiment)
    if ns.pareto:
        objectives = _objective.of_experiment(experiment)
        trials = trials[_objective.pareto(_objective.with_metrics(trials, objectives), objectives)]
    table = select(trials, ns.sort, ns.status, ns.top, ns.descending)
    text = render(table, ns.format)
    if ns.output:
        Path(ns.output).parent.mkdir(parents=True, exist_ok=True)
        Path(ns.output).write_text(text)
        _note(f"Wrote {len(table)} trials to {ns.output}")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if ns.plots:
        for path in write_plots(trials, experiment, Path(ns.plots), note=_note):
            _note(f"Wrote {path}")
    return 0


def _note(message: str) -> None:
    """Notes go to stderr so that `--format csv > trials.csv` stays clean."""
    sys.stdout.flush()
    print(message, file=sys.stderr)


def load_experiment(experiment: Path) -> pd.DataFrame:
    if not experiment.is_dir():
        raise ConfigError(f"{experiment}: no such folder; pass STORAGE_PATH/NAME of a search (e.g. runs/search-...)")
    trials = load_trials(experiment)
    if not trials.empty:  # a multi-objective search: its objectives' columns and the pareto marker
        trials = _objective.marked(trials, _objective.of_experiment(experiment))
    if trials.empty and not Experiment(experiment).is_search():
        raise ConfigError(f"{experiment}: not a search experiment (no search.yaml, no trial folders with params.json); "
                          "pass the folder python -m tune.search wrote (STORAGE_PATH/NAME)")
    if trials.empty:
        _note(f"{experiment}: no trial has started yet")
    return trials


def select(
    df: pd.DataFrame, sort: str, statuses: list[str] | None, top: int | None, descending: bool = False
) -> pd.DataFrame:
    if sort not in columns(df):
        raise ConfigError(f"--sort {sort}: unknown column; choose one of {', '.join(columns(df))}")
    if statuses:
        unknown = [s for s in statuses if s.replace("_", "-").replace(" ", "-").lower() not in STATUSES]
        if unknown:
            raise ConfigError(f"--status {' '.join(unknown)}: unknown; choose from {', '.join(STATUSES)}")
        df = df[df["status"].isin({Outcome.parse(s).value for s in statuses})]
    if top is not None and top < 1:
        raise ConfigError(f"--top must be a positive integer, but got {top}")
    key = (lambda s: s.map(hidden_size)) if sort == "hidden_channels" else None
    df = df.sort_values(sort, ascending=not descending, na_position="last", kind="stable", key=key)
    return (df.head(top) if top else df).reset_index(drop=True)


def hidden_size(hidden: str | None) -> float:
    """The summed width of a '16 32' hidden_channels string (NaN when unknown)."""
    widths = str(hidden or "").split()
    return float(sum(int(w) for w in widths)) if widths else math.nan


def render(df: pd.DataFrame, fmt: str) -> str:
    cols = columns(df)
    if fmt == "csv":
        return df[cols].to_csv(index=False)
    if fmt == "json":  # raw numbers (null where missing) plus each trial's val loss per epoch
        return df[cols + ["history"]].to_json(orient="records", indent=1) + "\n"
    view = formatted(df)
    if fmt == "markdown":
        return markdown_table(cols, view.values.tolist(), left=TEXT_COLUMNS) + "\n"
    if fmt == "html":
        return view.to_html(index=False, border=0) + "\n"
    return format_table(df)


# ---- plots ------------------------------------------------------------------------------------------------------
def write_plots(trials: pd.DataFrame, experiment: Path, out_dir: Path, note=_note) -> list[Path]:
    """Learning curves, val loss vs time per epoch (Pareto front), OOM map, Optuna importances (when it can)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (("learning_curves", _learning_curves), ("pareto", _pareto), ("oom_map", _oom_map)):
        fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
        draw(ax, trials)
        written.append(_save(fig, out_dir / f"{name}.png"))
    importances = param_importances(experiment, note)
    if importances:
        fig, ax = plt.subplots(figsize=(8, 0.5 * len(importances) + 1.5), constrained_layout=True)
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names], color="tab:blue")
        ax.set_xlabel("importance for val loss (Optuna)")
        ax.set_title(f"Parameter importances, {experiment.name}")
        written.append(_save(fig, out_dir / "importances.png"))
    return written


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _label(row) -> str:
    return f"{row.trial_id} [{row.hidden_channels}] b{_int(row.effective_batch)}"


def _int(v) -> str:
    return "?" if _missing(v) else str(int(v))


def _learning_curves(ax, trials: pd.DataFrame) -> None:
    curves = [row for row in trials.itertuples() if row.history]
    for row in curves:
        ax.plot(range(1, len(row.history) + 1), row.history, marker="o", ms=3, label=_label(row))
    losses = [v for row in curves for v in row.history if v is not None and v > 0]
    if losses and max(losses) / min(losses) > 20:
        ax.set_yscale("log")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("val loss")
    ax.set_title(f"Learning curves ({len(curves)} trials)")
    if 0 < len(curves) <= 20:
        ax.legend(fontsize=7)


def pareto_front(points: pd.DataFrame, x: str = "time_per_epoch_s", y: str = "val_loss") -> pd.DataFrame:
    """The rows no other row beats on both x and y (lower is better), ordered by x."""
    pts = points.dropna(subset=[x, y]).sort_values([x, y], kind="stable")
    best, keep = math.inf, []
    for i, v in zip(pts.index, pts[y]):
        if v < best:
            best = v
            keep.append(i)
    return pts.loc[keep]


def _pareto(ax, trials: pd.DataFrame) -> None:
    pts = trials.dropna(subset=["time_per_epoch_s", "val_loss"])
    front = pareto_front(pts)
    ax.scatter(pts["time_per_epoch_s"], pts["val_loss"], color="tab:gray", label="trial")
    for row in pts.drop(index=front.index).itertuples():
        ax.annotate(row.trial_id, (row.time_per_epoch_s, row.val_loss), fontsize=7, color="tab:gray",
                    xytext=(4, 4), textcoords="offset points")
    ax.plot(front["time_per_epoch_s"], front["val_loss"], "-o", color="tab:red", label="Pareto front (fast and good)")
    for row in front.itertuples():
        ax.annotate(_label(row), (row.time_per_epoch_s, row.val_loss), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    ax.set_xlabel("time per epoch (s)")
    ax.set_ylabel("val loss (last epoch)")
    ax.set_title(f"Val loss against time per epoch ({len(pts)} trials)")
    ax.legend(fontsize=8)


def _oom_map(ax, trials: pd.DataFrame) -> None:
    size = trials["hidden_channels"].map(hidden_size)
    groups = (("fitted", trials["status"].isin([o.value for o in FITTED]), "o", "tab:green"),
              ("out of memory", trials["status"] == Outcome.OOM.value, "X", "tab:red"),
              ("diverged / error", trials["status"].isin([Outcome.DIVERGED.value, Outcome.ERROR.value]), "s",
               "tab:gray"))
    for label, mask, marker, color in groups:
        if mask.any():
            ax.scatter(size[mask], trials.loc[mask, "effective_batch"], marker=marker, color=color, s=60, label=label)
    placed = pd.DataFrame({"x": size, "y": trials["effective_batch"], "id": trials["trial_id"]}).dropna()
    for (x, y), ids in placed.groupby(["x", "y"])["id"]:  # trials on the same point share one label
        ax.annotate(", ".join(ids), (x, y), fontsize=7, xytext=(5, 3), textcoords="offset points")
    from matplotlib.ticker import ScalarFormatter

    for axis, set_scale in ((ax.xaxis, ax.set_xscale), (ax.yaxis, ax.set_yscale)):
        set_scale("log", base=2)
        axis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("hidden size (sum of ConvLSTM widths)")
    ax.set_ylabel("effective batch (batch x accumulation)")
    ax.set_title("Which configs fit in memory")
    ax.legend(fontsize=8)


def param_importances(experiment: Path, note=_note) -> dict[str, float] | None:
    """Optuna's importances for the study in optuna.db; None (with a note) when they cannot be computed."""
    db = experiment / OPTUNA_DB
    if not db.is_file():
        note(f"Skipping the importance plot: {db} is missing (the other plots come from Ray's results)")
        return None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{db.resolve()}")
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if len(names) != 1:
        note(f"Skipping the importance plot: {db} holds {len(names)} studies ({names}), expected one")
        return None
    study = optuna.load_study(study_name=names[0], storage=storage)
    done = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    if len(done) < 2:
        note(f"Skipping the importance plot: {len(done)} completed Optuna trial(s); importances need at least 2")
        return None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "some regimes have less than 2 trials" on small searches
        try:
            return optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError) as exc:  # e.g. every completed trial has the same params
            note(f"Skipping the importance plot: Optuna could not compute importances ({exc})")
            return None


if __name__ == "__main__":
    main()
