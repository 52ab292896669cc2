"""Data-parallel training with Ray Train: the same fit() in N worker processes, one per GPU (or CPU, with gloo).

    python -m tune.retrain runs/NAME --num-gpus 2 [--address HEAD:6379]
    python train_convlstm.py --config best_config.yaml --num-gpus 2        # RAY_ADDRESS=HEAD:6379 for a cluster

Ray Train's TorchTrainer places N workers on one node or across nodes (ScalingConfig(num_workers=N,
use_gpu=True)), sets up torch.distributed (NCCL on GPUs, gloo on CPUs) and runs _worker in each. fit() sees the
process group and trains with DistributedDataParallel. The windows of each optimizer step of the single-process
run are shared over the ranks, so a step sees the searched effective batch: whole micro-batches per rank when
--gradient-accumulation-steps divides by N (each GPU keeps the searched micro-batch and runs 1/N of them), else
batch_size / N windows of every micro-batch (model/batches.shard_steps). Metrics are all-reduced, so early
stopping decides the same on every rank.

Rank 0 writes last.pt / best.pt into --output-dir exactly as a single-process run does, and reports them to Ray
Train too: a failed worker group is restarted from the latest (--max-failures), and when rank 0 ran on another
machine the driver copies them from Ray Train's storage into --output-dir at the end. On a multi-node cluster that
storage (--storage-path, default OUTPUT_DIR/ray_train) must be shared: NFS, or s3:// / gs://.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import ray
import ray.train
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from data_io import ConfigError, PreparedData, UserInputError, ensure_local, prepare
from model._cli import build
from model.config import Config, data_parallel_workers, per_worker_batch
from model.errors import Diverged, OutOfMemory
from model.trainer import EpochRecord, fit

log = logging.getLogger("convlstm")
CHECKPOINTS = ("last.pt", "best.pt")
# Settings of the communication libraries reach the workers on every node as the driver has them.
FORWARDED_ENV_PREFIXES = ("NCCL_", "TORCH_SYMM_MEM_", "NVSHMEM_", "GLOO_")


def fit_distributed(
    config: Config, data: PreparedData | None = None, address: str | None = None, storage_path: str | None = None,
    max_failures: int | None = None,
) -> list[EpochRecord]:
    """fit() on data_parallel_workers(config.train) Ray Train workers; returns rank 0's history.

    A worker that dies restarts the whole group from the last checkpoint, up to max_failures times
    (default: config.train.max_failures, the --max-failures flag).
    """
    config.validate()
    workers, use_gpu = data_parallel_workers(config.train), config.train.num_gpus > 1
    if data is None:
        data = prepare(config.data)
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False)  # None: RAY_ADDRESS if set, else a local cluster
    _check_resources(workers, use_gpu)
    out = Path(config.train.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    config.train.output_dir = str(out)  # workers may start in another folder
    micro, accumulation = per_worker_batch(config.train, workers)
    max_failures = config.train.max_failures if max_failures is None else max_failures
    log.info("Training data-parallel on %d %s workers (batch %d x %d accumulation steps per worker, effective "
             "batch %d), up to %d restart(s) from the last checkpoint", workers, "GPU" if use_gpu else "CPU", micro,
             accumulation, config.train.batch_size * config.train.gradient_accumulation_steps, max_failures)
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"config": config.to_dict(), "data": ray.put(data), "use_gpu": use_gpu},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=time.strftime("ddp-%Y%m%d-%H%M%S"),
            storage_path=storage_path or str(out / "ray_train"),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            worker_runtime_env={"env_vars": {k: v for k, v in os.environ.items()
                                             if k.startswith(FORWARDED_ENV_PREFIXES)}},
        ),
    )
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as exc:
        raise _known_error(exc) or exc from None
    if result.checkpoint is not None:
        _copy_missing(result.checkpoint, out)
    return [EpochRecord(**r) for r in result.return_value or []]


def _check_resources(workers: int, use_gpu: bool) -> None:
    total = ray.cluster_resources()
    kind, flag = ("GPU", "--num-gpus") if use_gpu else ("CPU", "--ddp-cpu-workers")
    if total.get(kind, 0) < workers:
        raise ConfigError(f"{flag} {workers}: the Ray cluster has {total.get(kind, 0):g} {kind}(s); ask for at most "
                          "that, or start more nodes (README.md, 'Scaling out')")


def _worker(loop_config: dict) -> list[dict]:
    """One rank: the config and data from the driver, a device, a resume point, then fit() reporting each epoch."""
    config = build(Config, loop_config["config"], "data-parallel config")
    data = ensure_local(ray.get(loop_config["data"]))  # a node without the cache entry rebuilds it
    rank = ray.train.get_context().get_world_rank()
    if loop_config["use_gpu"]:
        device = ray.train.torch.get_device()
        torch.cuda.set_device(device)
        config.train.device = "cuda"
    else:
        config.train.device = "cpu"
    restored = ray.train.get_checkpoint()
    if restored is not None:  # Ray Train restarted the worker group after a failure
        local = Path(tempfile.mkdtemp(prefix="convlstm-resume-"))
        with restored.as_directory() as d:
            shutil.copy2(Path(d) / "last.pt", local / "last.pt")
        config.train.resume = str(local / "last.pt")

    def report(record: EpochRecord, last: Path, final: bool) -> None:
        metrics = {k: v for k, v in record.to_dict().items() if v is not None}
        if rank != 0:
            ray.train.report(metrics)  # every rank reports each epoch; rank 0's checkpoint is the one kept
            return
        with tempfile.TemporaryDirectory() as d:
            for name in CHECKPOINTS:
                if (last.parent / name).is_file():
                    shutil.copy2(last.parent / name, Path(d) / name)
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(d))

    return [r.to_dict() for r in fit(config, data, on_epoch=report)]


def _copy_missing(checkpoint: Checkpoint, out: Path) -> None:
    """When rank 0 ran on another machine, --output-dir here lacks its checkpoints: take them from Ray Train's."""
    with checkpoint.as_directory() as d:
        for name in CHECKPOINTS:
            if (Path(d) / name).is_file() and not (out / name).is_file():
                shutil.copy2(Path(d) / name, out / name)


def _known_error(exc: Exception) -> Exception | None:
    """The first user-facing error (bad input, out of memory, diverged) inside Ray Train's wrapper, if any."""
    pending = [exc, *getattr(exc, "worker_failures", {}).values(), getattr(exc, "controller_failure", None)]
    while pending:
        e = pending.pop(0)
        if isinstance(e, (UserInputError, OutOfMemory, Diverged)):
            return e
        if e is not None:
            pending += [getattr(e, "cause", None), e.__cause__]
    return None
