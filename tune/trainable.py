"""One Ray Tune trial: the same fit() as the CLI, reporting every epoch, with OOM and divergence as outcomes."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import ray
import torch
from ray import tune

from data_io import PreparedData, ensure_local
from model.errors import Diverged, OutOfMemory, release_memory
from model.trainer import EpochRecord
from tune import _rescue
from tune._objective import METRICS
from tune.experiment import trial_config
from tune.outcome import Outcome

__all__ = ["pick_device", "train_trial", "trial_config"]


def pick_device(requested: str) -> str:
    """In the trial's own process: cuda when Ray gave this trial a GPU, else mps when present, else cpu."""
    if requested != "auto":
        return requested
    if ray.get_gpu_ids() and torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def train_trial(params: dict, data: PreparedData, base: dict, resources: dict, store=None) -> None:
    """`data` is the search's prepared data; a trial whose data fields differ gets its own from `store`
    (tune/_runner.DataStore: prepared once per distinct data config, shared through the object store)."""
    started = time.time()
    config = trial_config(base, params)
    if store is not None and config.data != trial_config(base, {}).data:
        (ref,) = ray.get(store.get.remote(config.data))
        data = ray.get(ref)
    config.train.device = pick_device(config.train.device)
    torch.set_num_threads(max(1, int(resources.get("cpus", 1))))
    # This trial's share (with --gpus-per-trial auto, each trial's own), as Ray assigned it.
    gpus = float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0) or 0)
    if config.train.device == "cuda":
        release_memory()  # what an earlier trial of this reused actor left would count against this one's cap
    if config.train.device == "cuda" and 0 < gpus < 1:
        # Our share of the card: a config too big for it runs out of memory itself, not its neighbour.
        torch.cuda.set_per_process_memory_fraction(gpus)
    trial_dir = Path(tune.get_context().get_trial_dir() or tempfile.mkdtemp())
    config.train.output_dir = str(trial_dir / "train")
    suggested = config.train  # the table and Optuna show the suggested batch, also after a rescue
    restored = tune.get_checkpoint()
    rescue: dict = {}  # rescued_batch / rescued_accumulation once the trial ran out of memory and was rescued
    if restored is not None:
        config, rescue = _rescue.restored(trial_dir, config)
        with restored.as_directory() as d:
            local = Path(config.train.output_dir)
            local.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(d) / "last.pt", local / "resume.pt")
        config.train.resume = str(local / "resume.pt")

    common = {
        "hidden_channels": " ".join(map(str, config.model.hidden_channels)),
        "batch_size": suggested.batch_size,
        "gradient_accumulation_steps": suggested.gradient_accumulation_steps,
        "effective_batch_size": suggested.batch_size * suggested.gradient_accumulation_steps,
        "learning_rate": config.train.learning_rate,
        "trial_started_at": started,
        "node_id": ray.get_runtime_context().get_node_id(),  # which node ran it (nodes may share an IP)
    }
    last = {"epoch": 0}

    def report(record: EpochRecord, last_pt: Path, final: bool) -> None:
        last["epoch"] = record.epoch
        values = {k: v for k, v in record.to_dict().items() if v is not None}
        metrics = {**common, **rescue, **values, "status": Outcome.OK.value, "trial_finished": final}
        with tempfile.TemporaryDirectory() as d:
            _link_or_copy(last_pt, Path(d) / "last.pt")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    try:  # a node without the cache entry rebuilds it; a restored trial goes on at its checkpoint's batch
        _rescue.fit_with_rescue(config, ensure_local(data), report, trial_dir, rescue, allowed=restored is None)
    except (OutOfMemory, Diverged) as exc:
        status = (Outcome.OOM if isinstance(exc, OutOfMemory) else Outcome.DIVERGED).value
        peak = getattr(exc, "peak_memory_mb", math.nan)
        # Every metric an --objective may name, NaN: Ray refuses a result that lacks one of the search's metrics.
        tune.report({
            **{m: math.nan for m in (*METRICS, "val_metric")}, **common, **rescue, "epoch": last["epoch"],
            "status": status, "trial_finished": True, "device": config.train.device, "val_loss": math.inf,
            "peak_memory_mb": peak, "message": str(exc)[:300],
        })


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem
        shutil.copy2(src, dst)
