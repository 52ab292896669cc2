"""Experiment tracking: --mlflow URI logs every trial (params, per-epoch metrics) through Ray Tune's
MLflowLoggerCallback; TensorBoard needs nothing here (Ray writes event files into every trial folder when
tensorboardX is installed: tensorboard --logdir runs/NAME)."""

from __future__ import annotations

import os
from pathlib import Path

from data_io import ConfigError

INSTALL = "pip install -e '.[mlflow]' (or pip install mlflow-skinny)"


def mlflow_uri(uri: str) -> str:
    """The tracking URI: a plain path (runs/mlflow) becomes a local file store, file:///abs/runs/mlflow."""
    if "://" in uri or uri.startswith("file:"):
        return uri
    return Path(uri).resolve().as_uri()


def check(uri: str | None) -> None:
    """Refuse --mlflow before any Ray start when MLflow is not installed."""
    if uri is None:
        return
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise ConfigError(f"--mlflow {uri}: MLflow is not installed; {INSTALL}") from None


def callbacks(uri: str | None, experiment_name: str) -> list:
    """Ray Tune callbacks for the tracking asked for: one MLflow run per trial, in the MLflow experiment named
    after the search (created when missing)."""
    if uri is None:
        return []
    check(uri)
    uri = mlflow_uri(uri)
    if uri.startswith("file:"):
        # MLflow 3 refuses a file store unless told: the user asked for one (it works offline, no server).
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    return [MLflowLoggerCallback(tracking_uri=uri, experiment_name=experiment_name, save_artifact=False,
                                 tags={"convlstm_tune_search": experiment_name})]
