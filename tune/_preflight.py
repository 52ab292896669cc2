"""Memory pre-flight: predict a trial's peak memory before it launches; skip the configs that cannot fit.

The prediction is `intercept + ratio * activations + states (+ the data, when a trial keeps it on the GPU)`:
- activations and states are counted for each config on the meta device (model/memory.footprint): exact for
  every variant the model family builds, with no per-variant formula to keep up to date;
- `intercept` and `ratio` are fitted once per data shape, device and topology (stacked, U-Net) by real probes of
  the search's own config (and of graphcast's default for the other topology) at two batch sizes on the device
  trials run on: on CUDA the trainer's own first epoch on a few windows (model/memory.trainer_probe, so CUDA
  graphs' pools are in it; reserved memory, which the share's cap bounds), on CPU one step's host memory. The ratio
  carries what the count cannot see (AMP keeps bf16 copies, GroupNorm and attention fp32 ones, cuDNN workspaces),
  the intercept what every step holds beside.
The calibration is cached in the experiment folder (preflight.json), keyed by the data shape and the device, so a
resumed search or a second one on the same folder does not probe again; and per machine, in the user's cache folder
(data_io.user_cache_dir()/preflight.json), keyed as well by the host, on CUDA the GPU kind Ray reports, the torch
version and a hash of the code that decides the memory a trial takes, so a new search on the same machine and data
shape starts without the 10-15 s of probes (BENCHMARKS §8, target 2). Delete that file to probe again.

A trial's budget is its GPU share of the card's memory (what its memory cap is), or on CPU the host's memory
over the trials that run at once; `--preflight-margin` multiplies the prediction before it is compared.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from data_io import ConfigError, PreparedData, ensure_local, user_cache_dir
from model.config import Config
from model.convlstm import check_grid
from model.memory import DataShape, counts_fused, footprint, host_probe, probe, probe_windows, trainer_probe
from tune import experiment as ex

log = logging.getLogger("convlstm")

PREFLIGHT_JSON = "preflight.json"
DECISIONS_JSONL = "preflight.jsonl"
SHARES = (0.125, 0.25, 0.5, 1.0)  # the menu of --gpus-per-trial auto and fit
PROBE_MB = 256  # counted activations of the larger probe
MB = 2**20


@dataclass
class Calibration:
    device: str  # "cuda:NVIDIA H200" or "cpu"
    total_mb: float  # the card's memory (GPU) or the host's (CPU)
    intercept_mb: float
    ratio: float  # measured MB per counted activation MB
    probes: list[dict] = field(default_factory=list)
    # topology -> [intercept_mb, ratio], where it was probed; others take the search's config's fit above
    topologies: dict[str, list[float]] = field(default_factory=dict)
    fused_gates: bool = False  # the trials' device runs the fused gate kernels: footprints count what they save

    def footprint(self, config: Config, shape: DataShape, batch: int | None = None):
        """The config's counted footprint as a trial on this calibration's device runs it."""
        return footprint(config, shape, batch, fused=self.fused_gates and config.train.fused_gates)

    def predict_mb(self, fp, data_mb: float = 0.0, topology: str | None = None) -> float:
        intercept, ratio = self.topologies.get(topology, (self.intercept_mb, self.ratio))
        return intercept + ratio * fp.activations / MB + fp.states / MB + data_mb


def fit(probes: list[dict]) -> tuple[float, float]:
    """(intercept MB, ratio) of measured - states = intercept + ratio * activations, by least squares."""
    xs = [p["activations_mb"] for p in probes]
    ys = [p["measured_mb"] - p["states_mb"] for p in probes]
    n, mx, my = len(xs), sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if n < 2 or var == 0:
        raise ValueError("the calibration needs probes of at least two different sizes")
    ratio = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var
    return my - ratio * mx, ratio


def probe_batches(config: Config, shape: DataShape, most: int = 1024, fused: bool = False) -> tuple[int, int]:
    """Two batches 8x apart, the larger the first power of 2 whose counted activations reach PROBE_MB (at most
    `most`): probes of a few MB would measure the allocator's noise, not the step."""
    per_sample = footprint(config, shape, 1, fused).activations / MB
    large = 8
    while large < most and large * per_sample < PROBE_MB:
        large *= 2
    large = min(large, most)
    return max(1, large // 8), large


def calibrate(configs: list[Config], shape: DataShape, device: str, data: PreparedData | None = None) -> Calibration:
    """Probe each config (the search's own first; one per topology) at probe_batches() on `device` ("cuda" or
    "cpu", in this process) and fit a calibration per topology. On CUDA with `data`, the probe is the trainer's own
    first epoch (trainer_probe); without, or on CPU, one step. A warm-up first: the first step's one-off
    allocations (library handles, arenas) are not the config's."""
    dev = torch.device("cuda", torch.cuda.current_device()) if device == "cuda" else None
    data = ensure_local(data) if data is not None else None  # a node without the cache entry rebuilds it
    most = probe_windows(data) if data is not None and device == "cuda" else 1024
    if device == "cuda" and most < 2:  # too few windows for the trainer's epoch: one step, no graphs
        most, data = 1024, None

    def measure(config: Config, batch: int) -> float:
        if device != "cuda":
            return host_probe(config, shape, batch)
        return trainer_probe(config, data, batch) if data is not None else probe(config, shape, dev, batch)

    measure(configs[0], 1)
    probes, topologies = [], {}
    for config in configs:
        fused = counts_fused(config, device)
        batches = probe_batches(config, shape, most, fused)
        mine = []
        for batch in batches:
            fp = footprint(config, shape, batch, fused)
            mine.append({"topology": config.model.topology, "batch": batch, "activations_mb": fp.activations / MB,
                         "states_mb": fp.states / MB, "measured_mb": measure(config, batch)})
        topologies.setdefault(config.model.topology, list(fit(mine)))
        probes += mine
    intercept, ratio = topologies[configs[0].model.topology]
    if device == "cuda":
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        name, total = f"cuda:{props.name}", props.total_memory / MB
    else:
        import psutil

        name, total = "cpu", psutil.virtual_memory().total / MB
    log.info("Memory pre-flight calibrated on %s: %s", name, "; ".join(
        f"{k}: {a:.0f} MB + {r:.2f} x counted activations" for k, (a, r) in topologies.items()))
    return Calibration(device=name, total_mb=total, intercept_mb=intercept, ratio=ratio, probes=probes,
                       topologies=topologies, fused_gates=counts_fused(configs[0], device))


def probe_configs(base: dict, shape: DataShape) -> list[Config]:
    """The configs a search calibrates on: its own, and the other topology's where this grid allows it."""
    configs = [ex.trial_config(base, {})]
    # The other topology's representative: graphcast's default U-Net for a stacked search, and the other way round.
    other_type = "stacked" if configs[0].model.topology == "unet" else "dual_stream"
    try:
        other = ex.trial_config(base, {"model_type": other_type})
        check_grid(other.model, *shape.grid)
        configs.append(other)
    except ConfigError:  # e.g. a grid too small to pool
        pass
    return configs


def data_on_gpu_mb(config: Config, shape: DataShape, total_mb: float, gpu: bool) -> float:
    """The prepared arrays' MB when the trainer keeps them on the GPU (data_on_device on, or auto and a quarter of
    the card at most), else 0."""
    t, mb = config.train, shape.data_bytes / MB
    on_gpu = gpu and (t.data_on_device == "on" or (t.data_on_device == "auto" and mb <= 0.25 * total_mb))
    return mb if on_gpu else 0.0


def cache_key(shape: DataShape, config: Config, device: str) -> str:
    d, t = config.data, config.train
    graphs = int(device == "cuda" and t.cuda_graphs and not t.compile)
    return f"{shape.key()}-w{d.window_size}-f{d.forecast_steps}-amp{int(t.use_amp)}-g{graphs}-{device}-v4"


def machine_key(key: str, device: str, accelerators: list[str]) -> str:
    """`key` on this machine: the host (a home folder shared between machines keeps one entry per machine), on CUDA
    also the GPU kinds the cluster has (Ray's accelerator_type resources; the calibration task runs on one of them);
    the torch version; the code's hash."""
    machine = socket.gethostname()
    if device == "cuda":
        machine += "-" + (",".join(sorted(accelerators)) or "gpu")
    return f"{key}-{machine}-torch{torch.__version__}-{code_version()}"


def code_version() -> str:
    """A hash of the sources that decide a trial's memory (the model package, this module): a calibration made by
    other code is probed again rather than trusted."""
    import model

    digest = hashlib.sha256()
    for path in sorted(Path(model.__file__).parent.glob("*.py")) + [Path(__file__)]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def machine_cache() -> Path:
    return user_cache_dir() / PREFLIGHT_JSON


def load_cached(path: Path, key: str) -> Calibration | None:
    """The calibration saved under `key` in `path` (an experiment's preflight.json, or machine_cache())."""
    try:
        saved = json.loads(path.read_text())["calibrations"][key]
        return Calibration(**saved)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(path: Path, key: str, calibration: Calibration) -> None:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = {}
    saved.setdefault("calibrations", {})[key] = asdict(calibration)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two searches saving at once do not share a file
    tmp.write_text(json.dumps(saved, indent=1))
    os.replace(tmp, path)


@dataclass
class Verdict:
    predicted_mb: float
    available_mb: float
    share: float  # the GPU share the trial gets (0 on CPU)

    @property
    def fits(self) -> bool:
        return self.predicted_mb <= self.available_mb


@dataclass
class Preflight:
    """What the searcher and the resources function ask before a trial launches. Picklable (Ray ships it)."""

    base: dict
    shape: DataShape
    calibration: Calibration
    margin: float = 1.1
    share: float | str = 1.0  # every trial's --gpus-per-trial (fit: as chosen), or "auto" (SHARES); 0: CPU trials
    budget_mb: float | None = None  # --preflight-memory-mb: a trial's budget, instead of its share's

    _predicted: dict = field(default_factory=dict, repr=False)  # the searcher and the resources function both ask

    def predicted_mb(self, params: dict) -> float:
        key = json.dumps(params, sort_keys=True, default=str)
        if key not in self._predicted:
            config = ex.trial_config(self.base, params)
            cal = self.calibration
            on_gpu = data_on_gpu_mb(config, self.shape, cal.total_mb, cal.device.startswith("cuda"))
            self._predicted[key] = cal.predict_mb(cal.footprint(config, self.shape), on_gpu, config.model.topology)
        return self._predicted[key]

    def budget(self, share: float) -> float:
        """MB a trial of this GPU share may use (on CPU, share 0: the budget given, or the host's memory)."""
        own = share * self.calibration.total_mb if share else self.calibration.total_mb
        return own if self.budget_mb is None else min(own, self.budget_mb)

    def check(self, params: dict) -> Verdict:
        need = self.margin * self.predicted_mb(params)
        if self.share == "auto":
            share = next((s for s in SHARES if need <= self.budget(s)), SHARES[-1])
        else:
            share = float(self.share)
        return Verdict(predicted_mb=need, available_mb=self.budget(share), share=share)

    def fitting_share(self, candidates: list[dict], least: float = 0.0) -> tuple[float, float]:
        """(share, MB with the margin): one GPU share for every trial of a search (--gpus-per-trial fit), the
        smallest of SHARES, at least `least`, that the largest prediction among `candidates` (the space's extremes,
        the baselines) fits; 1 when none does (the check of each trial then skips what cannot fit). A candidate
        that is not a valid config is no trial's: left out."""
        needs = []
        for params in candidates:
            try:
                needs.append(self.margin * self.predicted_mb(params))
            except ConfigError:
                continue
        need = max(needs, default=float("inf"))
        share = next((s for s in SHARES if s >= least - 1e-9 and need <= self.budget(s)), SHARES[-1])
        return share, need


def record(experiment: Path, trial_id: str, number: int, params: dict, verdict: Verdict) -> None:
    """One line per pre-flight decision in preflight.jsonl; the trial table reads it (predicted_mb, and a row
    `skipped` for each config that did not fit)."""
    if not verdict.fits:
        trial_id = f"skip{number:04d}"
    line = {"trial_id": trial_id, "optuna_number": number, "params": params, "skipped": not verdict.fits,
            "predicted_mb": round(verdict.predicted_mb, 1), "available_mb": round(verdict.available_mb, 1),
            "share": verdict.share}
    with (experiment / DECISIONS_JSONL).open("a") as f:
        f.write(json.dumps(line) + "\n")
    if not verdict.fits:
        log.info("Skipped config (Optuna trial %d): needs %.0f MB with the margin, has %.0f MB: %s", number,
                 verdict.predicted_mb, verdict.available_mb, params)


def decisions(experiment: Path) -> list[dict]:
    """Every decision of preflight.jsonl, in order (a line cut off by a crash is left out)."""
    return ex.read_jsonl(Path(experiment) / DECISIONS_JSONL)
