"""OOM rescue at the same effective batch: a trial that runs out of memory at batch b with accumulation k is run
once more, in place, at b/2 with 2k before it is recorded `oom`: from the start when no epoch has finished, else from
its last checkpoint, so the epochs it has reported stand and the reports go on. (On CUDA an OOM can come after the
first epoch: a trial with fewer than three micro-batches an epoch captures its CUDA graph in the second.)

Why this is the same trial: an epoch's window order depends only on (seed, epoch) (model/batches.epoch_order), so
b/2 x 2k groups exactly the windows of b x k into each optimizer step, and the loss is scaled by the step's count of
finite targets, not per micro-batch: the gradient is the same up to float rounding. Optuna keeps the suggested params
(b, k); the trial's reports and the table carry `rescued_batch` (b/2).

The rescue is written to the trial's folder (rescue.json) so that a trial restored from its checkpoint after a worker
died goes on at the batch it was rescued to, not at the one that does not fit.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

from data_io import PreparedData
from model.config import Config
from model.errors import OutOfMemory
from model.trainer import EpochCallback, EpochRecord, fit

log = logging.getLogger("convlstm")
RESCUE_JSON = "rescue.json"


def halved(config: Config) -> Config | None:
    """The config at half the batch and twice the accumulation; None when the batch cannot be halved exactly."""
    t = config.train
    if t.batch_size < 2 or t.batch_size % 2:
        return None
    rescued = copy.deepcopy(config)
    rescued.train.batch_size = t.batch_size // 2
    rescued.train.gradient_accumulation_steps = 2 * t.gradient_accumulation_steps
    return rescued


def record(trial_dir: Path, original: Config, rescued: Config, message: str) -> dict:
    """Write rescue.json; returns the fields every later report of the trial carries."""
    fields = {"rescued_batch": rescued.train.batch_size,
              "rescued_accumulation": rescued.train.gradient_accumulation_steps}
    saved = {**fields, "from_batch": original.train.batch_size,
             "from_accumulation": original.train.gradient_accumulation_steps, "oom": message[:300]}
    Path(trial_dir).mkdir(parents=True, exist_ok=True)
    (Path(trial_dir) / RESCUE_JSON).write_text(json.dumps(saved))
    log.warning("Out of memory at batch %d x %d; rescued at batch %d x %d (same effective batch): %s",
                original.train.batch_size, original.train.gradient_accumulation_steps,
                rescued.train.batch_size, rescued.train.gradient_accumulation_steps, message[:200])
    return fields


def restored(trial_dir: Path, config: Config) -> tuple[Config, dict]:
    """The config a trial restored from its checkpoint goes on with: the rescued one when rescue.json says so."""
    path = Path(trial_dir) / RESCUE_JSON
    if not path.is_file():
        return config, {}
    saved = json.loads(path.read_text())
    config = copy.deepcopy(config)
    config.train.batch_size = int(saved["rescued_batch"])
    config.train.gradient_accumulation_steps = int(saved["rescued_accumulation"])
    return config, {"rescued_batch": config.train.batch_size,
                    "rescued_accumulation": config.train.gradient_accumulation_steps}


def fit_with_rescue(config: Config, data: PreparedData, on_epoch: EpochCallback, trial_dir: Path, rescue: dict,
                    allowed: bool = True) -> list[EpochRecord]:
    """fit(), rescued once at b/2 x 2k when it runs out of memory: from the start before its first epoch ends,
    after that from the last epoch's checkpoint (last.pt). `rescue` (the dict the reports carry) gets the rescued_*
    fields at the rescue. Raises OutOfMemory when the rescue is not allowed,
    not possible (odd batch) or runs out of memory too; its message then says at which batch it was rescued."""
    epochs = [0]

    def counted(record: EpochRecord, last_pt: Path, final: bool) -> None:
        epochs[0] = record.epoch
        on_epoch(record, last_pt, final)

    attempt = config
    while True:
        try:
            return fit(attempt, data, on_epoch=counted)
        except OutOfMemory as exc:
            smaller = halved(attempt) if allowed and not rescue else None
            if smaller is None:
                if rescue:
                    raise OutOfMemory(f"{exc} (after the rescue at batch {rescue['rescued_batch']})",
                                      peak_memory_mb=exc.peak_memory_mb) from None
                raise
            if epochs[0]:  # epochs reported at batch b: go on from the last one's checkpoint, same trajectory
                smaller.train.resume = str(Path(attempt.train.output_dir) / "last.pt")
            rescue.update(record(trial_dir, attempt, smaller, str(exc)))
            attempt = smaller
