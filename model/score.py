"""The one scorer: the trainer's validation, the evaluation of a checkpoint and so the retrain's metrics.json.

A `Scorer` takes the model's normalised output and the batch it came from, and accumulates on the device the
normalised loss and, in physical units, latitude-weighted squared and absolute error sums per method (the model,
persistence, and any reference forecast the caller adds, e.g. climatology), lead and target channel.

`collect=True` also keeps the physical fields of one target channel on the CPU, so that `fields()` hands them to
the verification scores (model.verify_table.validation_score: CSI at a threshold, skill scores, ...) without a
second forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from data_io import NormStats
from model.losses import ForecastLoss
from model.metrics import denormalize, latitude_weights, mae, masked_sse, rmse, weighted_errors

# Indices into the second axis of Scorer.sums.
SSE, SAE, WEIGHT = 0, 1, 2


class Scorer:
    """Error sums of the model and its reference forecasts against the truth, in physical units.

    `same_points=False` scores each forecast wherever it and the truth exist (validation: a gap in the last input
    step leaves persistence undefined there, not the model's score). `same_points=True` scores every method on the
    points where the truth and all reference forecasts exist (evaluation: the methods compare like for like).
    """

    def __init__(self, stats: NormStats, lat: np.ndarray, forecast_steps: int, device: torch.device,
                 references: Sequence[str] = ("persistence",), same_points: bool = False,
                 loss: ForecastLoss | None = None, collect: int | None = None) -> None:
        if "persistence" not in references:
            raise ValueError(f"references must include persistence, but got {list(references)}")
        self.methods = ("model", *references)
        self.same_points = same_points
        # Copies: arrays from Ray's object store are read-only, which torch.as_tensor warns about.
        self.stats = (torch.as_tensor(np.array(stats.mean), device=device).float(),
                      torch.as_tensor(np.array(stats.std), device=device).float(),
                      torch.as_tensor(np.array(stats.log), device=device))
        self.lat_w = torch.as_tensor(latitude_weights(lat), dtype=torch.float32, device=device)
        self.sums = torch.zeros(len(self.methods), 3, forecast_steps, len(stats.channels), device=device)
        # The training loss (validation; early stopping follows it), else the plain normalised MSE.
        self.loss_fn = loss
        groups = len(loss.groups) if loss is not None else 1
        self.loss_sums = torch.zeros(2, groups, device=device)  # weighted squared error, weight, per loss group
        self.collect = collect  # the target channel whose fields are kept, or None
        self.kept: dict[str, list[torch.Tensor]] = {}

    def physical(self, pred_z: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(forecast, truth, persistence) in physical units, each (batch, lead, channel, lat, lon)."""
        truth = denormalize(batch["y"], self.stats)
        persist = denormalize(batch["last"], self.stats)[:, None].expand_as(truth)
        return denormalize(pred_z, self.stats), truth, persist

    def add(self, pred_z: torch.Tensor, batch: dict, references: dict[str, torch.Tensor] | None = None) -> None:
        """One batch: the model's normalised output, the batch (y, last), and any other reference in physical units."""
        if self.loss_fn is not None:
            self.loss_sums += torch.stack(self.loss_fn.sums(pred_z, batch["y"]))
        else:
            sse, count = masked_sse(pred_z, batch["y"])
            self.loss_sums += torch.stack([sse, count.to(sse.dtype)]).view(2, 1)
        pred, truth, persist = self.physical(pred_z, batch)
        forecasts = {"model": pred, "persistence": persist, **(references or {})}
        if self.collect is not None:
            for name, field in {"truth": truth, **forecasts}.items():
                self.kept.setdefault(name, []).append(field[:, :, self.collect].float().cpu())
        if self.same_points:
            for name in self.methods[1:]:
                truth = torch.where(torch.isfinite(forecasts[name]), truth, torch.nan)
        for m, name in enumerate(self.methods):
            fc = forecasts[name]
            scored = truth if self.same_points or name == "model" else torch.where(torch.isfinite(fc), truth, torch.nan)
            self.sums[m] += torch.stack(weighted_errors(fc, scored, self.lat_w))

    def all_reduce(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Sum the accumulators over data-parallel ranks (reduce sums a tensor in place)."""
        reduce(self.sums)
        reduce(self.loss_sums)

    def fields(self) -> dict[str, torch.Tensor]:
        """The collected channel's fields (truth, model, persistence, references): (window, lead, lat, lon) each."""
        if self.collect is None:
            raise ValueError("fields() needs a Scorer made with collect=<target channel index>")
        return {name: torch.cat(parts) for name, parts in self.kept.items()}

    @property
    def loss(self) -> float:
        if self.loss_fn is not None:
            return float(self.loss_fn.value(self.loss_sums[0], self.loss_sums[1]))
        return float(self.loss_sums[0, 0] / self.loss_sums[1, 0].clamp_min(1))

    def rmse(self, method: str) -> torch.Tensor:
        """(lead, channel)."""
        s = self.sums[self.methods.index(method)]
        return rmse(s[SSE], s[WEIGHT])

    def mae(self, method: str) -> torch.Tensor:
        s = self.sums[self.methods.index(method)]
        return mae(s[SAE], s[WEIGHT])

    def summary(self) -> dict:
        """Validation's numbers: the loss, and model/persistence RMSE and MAE over all target channels."""
        out: dict = {"loss": self.loss}
        for name, prefix in (("model", ""), ("persistence", "persistence_")):
            s = self.sums[self.methods.index(name)]
            out[f"{prefix}rmse"] = float(rmse(s[SSE].sum(), s[WEIGHT].sum()))
            per_lead = s.sum(-1)
            out[f"{prefix}rmse_per_lead"] = rmse(per_lead[SSE], per_lead[WEIGHT]).tolist()
            out[f"{prefix}mae_per_lead"] = mae(per_lead[SAE], per_lead[WEIGHT]).tolist()
        return {k: out[k] for k in ("loss", "rmse", "persistence_rmse", "rmse_per_lead", "mae_per_lead",
                                    "persistence_rmse_per_lead", "persistence_mae_per_lead")}
