"""The training loop: one `fit(config)` used by the CLI, every search trial and the retrain.

Read top to bottom: setup (device, data, model, optimizer, resume), then per epoch a training pass with
exact gradient accumulation, a validation pass in physical units, a metrics record, checkpoints and early
stopping. No host-device sync inside the step loop: losses are accumulated as device tensors.

Data-parallel: when torch.distributed is initialised (tune.distributed starts one process per GPU with Ray Train),
the model is wrapped in DistributedDataParallel and the windows of every optimizer step of the single-process run
are shared over the N ranks, so one step still sees the searched effective batch. When the accumulation steps
divide by N each rank runs whole micro-batches of the searched size (N times fewer each); otherwise each rank takes
batch_size / N windows of every micro-batch (model/batches.shard_steps). Counts and losses are all-reduced, so
metrics and early stopping are exact and identical on every rank; rank 0 alone writes checkpoints.
"""

from __future__ import annotations

import importlib
import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from data_io import ConfigError, PreparedData, prepare
from model import _schedule as schedule
from model import checkpoint as ckpt_io
from model.batches import DeviceBatches, cpu_batches, epoch_order, optimizer_steps, pad_batch, shard_steps
from model.build import model_from_config
from model.config import Config, per_worker_batch
from model.convlstm import check_grid
from model.device import amp_dtype, describe, peak_memory_mb, select_device
from model._fields import field_array, metric_channel
from model._graphs import StepGraphs
from model.errors import Diverged, OutOfMemory, is_oom, release_memory
from model.losses import ForecastLoss
from model.score import Scorer

log = logging.getLogger("convlstm")


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    val_rmse: float
    persistence_rmse: float
    time_per_epoch_s: float
    samples_per_s: float
    peak_memory_mb: float
    device: str
    effective_batch_size: int
    first_step_at: float | None = None  # wall clock after the run's first optimizer step (trial start-up cost)
    learning_rate: float | None = None  # during this epoch (--lr-scheduler changes it between epochs)
    val_metric: float | None = None  # --metric's score on the validation split, physical units

    def to_dict(self) -> dict:
        return asdict(self)


# Called after every epoch with the record, the path of last.pt, and whether this is the run's last epoch.
EpochCallback = Callable[[EpochRecord, Path, bool], None]


def fit(config: Config, data: PreparedData | None = None, on_epoch: EpochCallback | None = None) -> list[EpochRecord]:
    """Train until num_epochs or early stopping. Raises OutOfMemory (memory already released) or Diverged."""
    config.validate()
    device = select_device(config.train.device)
    log.info("Device: %s", describe(device))
    if data is None:
        data = prepare(config.data)
    try:
        history = Trainer(config, data, device).run(on_epoch)
    except Exception as exc:
        if not is_oom(exc):
            raise
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
        message = f"out of memory on {describe(device)}: {first_line[:200]}"
    else:
        if device.type == "cuda":
            # The trainer and its CUDA graphs form a reference cycle (each graph holds a bound method): without a
            # collection here their pools outlive the fit and count against the next trial of a reused actor.
            release_memory()
        return history
    # Outside the except block the traceback (and the tensors its frames hold) is gone, so memory can be freed.
    peak = peak_memory_mb(device)
    release_memory()
    raise OutOfMemory(message, peak_memory_mb=peak)


class Trainer:
    def __init__(self, config: Config, data: PreparedData, device: torch.device) -> None:
        _import_dynamo_apart()
        t = config.train
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())  # DDP and memory queries want an index
        self.config, self.data, self.device = config, data, device
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if _distributed() else (0, 1)
        self.whole_batches = per_worker_batch(t, self.world)[0] == t.batch_size  # else batch/N of each micro-batch
        self.out_dir = Path(t.output_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(t.seed)
        np.random.seed(t.seed % 2**32)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = t.cudnn_benchmark
        check_grid(config.model, *data.inputs.shape[-2:])
        if data.upstream is not None:
            check_grid(config.model, *data.upstream.shape[-2:], box="upstream")
        self.model = model_from_config(config, data.inputs.shape[1], data.targets.shape[1],
                                       upstream=data.upstream is not None).to(device)
        self.memory_format = (torch.channels_last if (t.channels_last and device.type == "cuda")
                              else torch.contiguous_format)
        self.model = self.model.to(memory_format=self.memory_format)
        if t.compile:
            torch._dynamo.reset()  # a reused process (search trial, benchmark) would otherwise hit the recompile limit
            if config.model.topology == "unet":
                # Inductor's coalescing analysis (torch 2.11) fails on the U-Net's up-sampling indices ("TypeError:
                # Expected a number but got Add" in tiling_utils.analyze_memory_coalescing); it only picks tilings.
                import torch._inductor.config as inductor

                inductor.triton.coalesce_tiling_analysis = False
        compiled = torch.compile(self.model, mode=t.compile_mode, dynamic=False) if t.compile else self.model
        self.cuda_graphs = t.compile and t.compile_mode == "reduce-overhead" and device.type == "cuda"
        # Gradients live in their own memory and are zeroed in place, never set to None: with CUDA graphs the
        # backward's outputs are graph memory that the next micro-batch's replay overwrites, and accumulation
        # would add into them.
        for p in self.model.parameters():
            p.grad = torch.zeros_like(p)
        if self.world > 1 and t.compile:
            # Whole compiled graphs under DDP: dynamo's DDPOptimizer would split forward and backward at the
            # bucket boundaries (DDP's first bucket is 1 MB), which on this model costs more than overlapping the
            # all-reduce of a few MB with the backward gains (benchmarks/ddp_profile.py).
            torch._dynamo.config.optimize_ddp = False
        # DDP broadcasts rank 0's weights and averages gradients; self.model stays the plain module checkpoints hold.
        # Gradients as views of DDP's buckets: no copy into the buckets before the all-reduce.
        self.ddp = torch.nn.parallel.DistributedDataParallel(
            compiled, device_ids=[device.index] if device.type == "cuda" else None,
            gradient_as_bucket_view=True) if self.world > 1 else None
        self.forward = self.ddp or compiled
        # Fused AdamW on CUDA: one kernel for all parameters instead of a handful per step.
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=t.learning_rate, weight_decay=t.weight_decay,
                                           fused=device.type == "cuda")
        self.scheduler = schedule.make_scheduler(self.optimizer, t)
        self.amp = amp_dtype(device, t.use_amp)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp == torch.float16 and device.type == "cuda")
        self.device_batches = self._device_batches()
        # Eager steps replayed as CUDA graphs (model/_graphs.py). Not under DDP, whose all-reduce hooks run on the
        # host during backward, and not with torch.compile, whose reduce-overhead mode makes graphs of its own.
        self.graphed = t.cuda_graphs and device.type == "cuda" and self.world == 1 and not t.compile
        self._train_graphs = StepGraphs(self._micro_step) if self.graphed else None
        self._eval_graphs = StepGraphs(self._eval_forward) if self.graphed else None
        # The epoch's last, smaller batch is padded to the full batch and replays the same graph: a second graph
        # would need its eager warm-up memory beside the first graph's pool, up to twice a trial's footprint
        # (BENCHMARKS §11). Exact: padded targets are NaN, which the loss masks, and every layer but BatchNorm
        # in training treats samples apart; with BatchNorm the last batch keeps a graph of its own.
        self._pad_train = self.graphed and not config.model.use_batch_norm
        self.loss = ForecastLoss(t, data.target_stats, device)
        self.step_weights = self.loss.per_step_weights(data.targets)  # (time, loss group)
        self.start_epoch, self.best_val, self.stale, self.history = 1, math.inf, 0, []
        self.first_step_at: float | None = None
        if t.resume:
            self._resume(t.resume)

    # ---- setup helpers -------------------------------------------------------------------------------------
    def _device_batches(self) -> DeviceBatches | None:
        mode = self.config.train.data_on_device
        if self.device.type != "cuda" or mode == "off":
            return None
        if mode == "auto":
            free, _ = torch.cuda.mem_get_info(self.device)
            if self.data.nbytes() > 0.25 * free:
                return None
        return DeviceBatches(self.data, self.device)

    def _resume(self, path: str) -> None:
        state = ckpt_io.load(path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        t = self.config.train
        if self.scheduler is not None and state.get("scheduler") is not None:
            if state["config"]["train"].get("lr_scheduler") == t.lr_scheduler:
                self.scheduler.load_state_dict(state["scheduler"])
            else:
                log.warning("%s was trained with --lr-scheduler %s; starting --lr-scheduler %s afresh", path,
                            state["config"]["train"].get("lr_scheduler"), t.lr_scheduler)
        if t.reset_lr_on_resume:
            schedule.reset_learning_rate(self.optimizer, self.scheduler, t.learning_rate)
        self.scaler.load_state_dict(state["scaler"])
        ckpt_io.set_rng_state(state["rng"])
        self.start_epoch = state["epoch"] + 1
        self.best_val, self.stale = state["best_val_loss"], state["epochs_without_improvement"]
        self.history = [EpochRecord(**r) for r in state["history"]]
        log.info("Resumed from %s at epoch %d", path, state["epoch"])

    def _source(self, batches: list[np.ndarray]):
        """Batch dicts for these window-start arrays, in order: gathered on the GPU, or by a DataLoader."""
        if self.device_batches is not None:
            return self.device_batches(batches)
        return cpu_batches(self.data, batches, self.config.train.num_workers, pin=self.device.type == "cuda")

    def _train_steps(self, epoch: int) -> tuple[list, list[int]]:
        """This rank's micro-batches of every optimizer step, and each whole step's count of finite targets.

        The counts are those of the step's windows on all ranks together, the same on every rank and known
        before the step runs: the loss needs no device reduction to be scaled.
        """
        t, c = self.config.train, self.config.data
        order = epoch_order(self.data.starts("train"), True, t.seed, epoch, t.batch_size)
        steps = optimizer_steps(order, t.gradient_accumulation_steps)
        leads = np.arange(c.forecast_steps) + c.window_size - 1 + c.target_offset
        counts = [self.step_weights[np.concatenate(s)[:, None] + leads].sum(axis=(0, 1)) for s in steps]
        return shard_steps(steps, self.rank, self.world, self.whole_batches), counts

    def _eval_batches(self, split: str):
        """Whole batches, dealt out to the ranks in turn: evaluation has no collective until its final sums."""
        order = epoch_order(self.data.starts(split), False, 0, 0, self.config.train.batch_size)
        return self._source(order[self.rank :: self.world])

    def _to_device(self, batch: dict) -> dict:
        out = {}
        for k, v in batch.items():
            v = v.to(self.device, non_blocking=True)
            out[k] = v
        return out

    def _all_reduce(self, tensor: torch.Tensor, op=None) -> torch.Tensor:
        """Sum (or op) over ranks, in place; the tensor itself when training in one process."""
        if self.world > 1:
            dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
        return tensor

    def _autocast(self):
        # No cast cache when graphed: a cached bf16 weight would be a tensor from outside the graph's memory.
        return (torch.autocast(self.device.type, dtype=self.amp, cache_enabled=not self.graphed) if self.amp
                else nullcontext())

    def _micro_step(self, x: torch.Tensor, up: torch.Tensor | None, y: torch.Tensor,
                    factor: torch.Tensor) -> torch.Tensor:
        """Forward, loss and backward of one micro-batch; gradients add into .grad. Returns its loss group sums."""
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with self._autocast():
            pred = self.forward(x, up)
        sse, _ = self.loss.sums(pred, y)
        self.scaler.scale((sse * factor).sum()).backward()
        return sse.detach()

    def _eval_forward(self, x: torch.Tensor, up: torch.Tensor | None) -> torch.Tensor:
        with torch.no_grad(), self._autocast():
            return self.forward(x, up)

    def _predict(self, batch: dict) -> torch.Tensor:
        if self.cuda_graphs:
            # Each call is a new step for CUDA graphs: with accumulation, the next micro-batch's forward would
            # otherwise be taken as part of the last one's and its replay would overwrite tensors still in use.
            torch.compiler.cudagraph_mark_step_begin()
        with self._autocast():
            return self.forward(batch["x"], batch.get("up"))

    # ---- the loop ------------------------------------------------------------------------------------------
    def run(self, on_epoch: EpochCallback | None = None) -> list[EpochRecord]:
        t = self.config.train
        for epoch in range(self.start_epoch, t.num_epochs + 1):
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            t0 = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            train_loss, n_samples = self.train_epoch(epoch)
            train_time = time.perf_counter() - t0
            val = self.evaluate("val")
            elapsed = time.perf_counter() - t0
            peak = peak_memory_mb(self.device)
            if self.world > 1:  # the slowest rank's time and the largest rank's memory
                elapsed, train_time, peak = self._all_reduce(
                    torch.tensor([elapsed, train_time, peak], dtype=torch.float64, device=self.device),
                    dist.ReduceOp.MAX).tolist()
            if not math.isfinite(train_loss) or not math.isfinite(val["loss"]):
                raise Diverged(f"epoch {epoch}: train loss {train_loss}, val loss {val['loss']} is not finite; "
                               "lower --learning-rate or keep --gradient-clip-norm on")
            record = EpochRecord(
                epoch=epoch, train_loss=train_loss, val_loss=val["loss"], val_rmse=val["rmse"],
                persistence_rmse=val["persistence_rmse"], time_per_epoch_s=elapsed,
                samples_per_s=n_samples / max(train_time, 1e-9), peak_memory_mb=peak,
                device=self.device.type, effective_batch_size=t.batch_size * t.gradient_accumulation_steps,
                first_step_at=self.first_step_at if epoch == self.start_epoch else None, learning_rate=lr,
                val_metric=val.get("val_metric"),
            )
            schedule.step(self.scheduler, record.val_loss)  # before saving: a resumed run continues the schedule
            self.history.append(record)
            improved = record.val_loss < self.best_val
            if improved:
                self.best_val, self.stale = record.val_loss, 0
            else:
                self.stale += 1
            last = self.save(epoch, improved)
            (log.info if self.rank == 0 else log.debug)(
                "epoch %d/%d  train_loss %.4f  val_loss %.4f  val_rmse %.4g (persistence %.4g)  "
                "time_per_epoch %.2f s  %.0f samples/s  peak %.0f MB  lr %.3g",
                epoch, t.num_epochs, record.train_loss, record.val_loss, record.val_rmse,
                record.persistence_rmse, record.time_per_epoch_s, record.samples_per_s, record.peak_memory_mb, lr,
            )
            stop_early = self.stale >= t.early_stopping_patience
            if on_epoch is not None:
                on_epoch(record, last, stop_early or epoch == t.num_epochs)
            if stop_early:
                log.info("Early stopping: val loss has not improved for %d epochs", self.stale)
                break
        return self.history

    def train_epoch(self, epoch: int) -> tuple[float, int]:
        """One pass over the training windows. Returns (mean loss, samples seen)."""
        t = self.config.train
        self.model.train()
        shards, counts = self._train_steps(epoch)
        batches = self._source([b for shard in shards for b, _ in shard])
        total_sse = torch.zeros(len(self.loss.groups), device=self.device)
        total_count = np.zeros(len(self.loss.groups))
        n_samples = 0
        # Every micro-batch's loss factors, moved to the device once: a tensor made per step would sync the host.
        # A stand-in's are 0: zero gradient, still part of DDP's all-reduce.
        factors = iter(torch.as_tensor(np.stack([
            self.loss.factors(count, self.world) * is_real for shard, count in zip(shards, counts)
            for _, is_real in shard])).to(self.device).unbind())
        for shard, count in zip(_progress(shards, len(shards), f"epoch {epoch}"), counts):
            # Exact accumulation: every micro-batch's squared error is divided by the whole step's weight sums, so
            # the summed gradient equals that of one batch holding the step's windows (NaN targets excluded). Across
            # ranks the loss is also scaled by N, undoing DDP's average.
            for i, (_, is_real) in enumerate(shard):
                b = self._to_device(next(batches))
                sync = self.ddp is None or i == len(shard) - 1  # DDP all-reduces once, on the last micro-batch
                factor = next(factors)
                with nullcontext() if sync else self.ddp.no_sync():
                    if self._train_graphs is None:
                        sse = self._micro_step(b["x"], b.get("up"), b["y"], factor)
                    else:
                        x, up, y = (pad_batch(b, t.batch_size) if self._pad_train else (b["x"], b.get("up"), b["y"]))
                        sse = self._train_graphs(x, up, y, factor)
                if is_real:
                    total_sse += sse
                n_samples += b["x"].shape[0] if is_real else 0
            total_count += count
            self.scaler.unscale_(self.optimizer)
            if t.gradient_clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.gradient_clip_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=False)
            if self.first_step_at is None:
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)  # once per run, to time start-up honestly
                self.first_step_at = time.time()
        if self.world > 1:
            total_sse = self._all_reduce(total_sse)
            n_samples = int(self._all_reduce(torch.tensor(n_samples, device=self.device)))
        return float(self.loss.value(total_sse, total_count)), n_samples

    @torch.no_grad()
    def evaluate(self, split: str) -> dict:
        """Normalised loss, and latitude-weighted RMSE/MAE per lead in physical units for model and persistence."""
        self.model.eval()
        metric = self.config.train.val_metric if split == "val" else None
        channel = metric_channel(self.data.target_channels, self.data.target_attrs) if metric else None
        scorer = Scorer(self.data.target_stats, self.data.lat, self.config.data.forecast_steps, self.device,
                        loss=self.loss, collect=channel)
        for b in self._eval_batches(split):
            b = self._to_device(b)
            if self.graphed:  # evaluation mode treats samples apart (BatchNorm too): pad, then keep the real ones
                x, up, _ = pad_batch(b, self.config.train.batch_size)
                scorer.add(self._eval_graphs(x, up)[: b["x"].shape[0]], b)
            else:
                scorer.add(self._predict(b), b)
        if self.world > 1:
            scorer.all_reduce(self._all_reduce)
        out = scorer.summary()
        if metric:
            out["val_metric"] = self._validation_metric(metric, channel, scorer.fields())
        return out

    def _validation_metric(self, name: str, channel: int, fields: dict[str, torch.Tensor]) -> float:
        """--metric on the validation fields of every rank, pooled over windows, leads and cells."""
        from model.verify_table import validation_score

        if self.world > 1:
            gathered: list = [None] * self.world
            dist.all_gather_object(gathered, fields)
            fields = {k: torch.cat([g[k] for g in gathered]) for k in fields}
        target = self.data.target_channels[channel]
        attrs = self.data.target_attrs.get(target.split("@")[0], {})

        def da(key: str):
            return field_array(fields[key].numpy(), self.data.lat, self.data.lon, name=target, attrs=attrs)

        try:
            return validation_score(name, da("model"), da("truth"), persistence=da("persistence"))
        except ValueError as exc:
            raise ConfigError(f"--metric {name}: {exc}") from None

    def save(self, epoch: int, improved: bool) -> Path:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "epoch": epoch,
            "config": self.config.to_dict(),
            "input_stats": self.data.input_stats.to_dict(),
            "target_stats": self.data.target_stats.to_dict(),
            "meta": ckpt_io.plain(checkpoint_meta(self.data)),
            "rng": ckpt_io.rng_state(),
            "best_val_loss": self.best_val,
            "epochs_without_improvement": self.stale,
            "history": [r.to_dict() for r in self.history],
        }
        last = self.out_dir / "last.pt"
        if self.rank != 0:  # every rank holds the same weights; one writes them
            return last
        ckpt_io.save_atomic(state, last)
        if improved:
            ckpt_io.save_atomic(state, self.out_dir / "best.pt")
        every = self.config.train.checkpoint_every
        if every and epoch % every == 0:
            ckpt_io.save_atomic(state, self.out_dir / f"epoch_{epoch}.pt")
        return last


def _import_dynamo_apart() -> None:
    """Import torch._dynamo, which torch imports lazily inside the first optimizer's constructor, in a thread of its
    own. Why: a module imported along the way may keep a failed optional import's exception, and its traceback's
    frames keep the whole calling stack alive for the life of the process. On the H200 image, cupyx loads optuna,
    which keeps redis's ImportError: the process's first Trainer stayed alive with its data and model on the GPU
    (621 MB at 0.25 deg, through every later trial of a reused actor; BENCHMARKS §11). A new thread's stack holds
    nothing of ours. Where the import fails, the optimizer's own import raises it as before."""
    if "torch._dynamo" in sys.modules:
        return

    def load() -> None:
        try:
            importlib.import_module("torch._dynamo")
        except Exception:  # not kept: its traceback is what this avoids
            pass

    thread = threading.Thread(target=load, name="import-torch-dynamo", daemon=True)
    thread.start()
    thread.join()


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def checkpoint_meta(data: PreparedData) -> dict:
    """What predict needs to check a data file against the model and to write the forecast's grid."""
    return {
        "channels": data.channels,
        "target_channels": data.target_channels,
        "lat": data.lat.tolist(),
        "lon": data.lon.tolist(),
        "upstream_shape": list(data.upstream.shape[-2:]) if data.upstream is not None else None,
        "levels": {k: [float(v) if isinstance(v, (int, float)) else str(v) for v in lv]
                   for k, lv in data.levels.items()},
        "target_attrs": data.target_attrs,
        "lon_signed": data.lon_signed,
        "grid": data.grid,  # a projected grid's names, mapping and 1-D axes (None: regular); lat/lon are then 2-D
    }


def _progress(iterable, total: int, desc: str):
    if sys.stdout.isatty():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, leave=False)
    return iterable
