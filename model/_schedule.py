"""Learning-rate schedules, stepped once per epoch after validation (--lr-scheduler).

plateau is graphcast's ReduceLROnPlateau (factor 0.9, patience 20, min_lr 1e-6 by default); cosine decays from
--learning-rate at the first epoch to --min-lr at the last. Every rank steps with the same all-reduced val loss,
so the learning rates stay identical under data-parallel training.
"""

from __future__ import annotations

import math

import torch

from model.config import TrainConfig

Scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau | torch.optim.lr_scheduler.LambdaLR


def make_scheduler(optimizer: torch.optim.Optimizer, t: TrainConfig) -> Scheduler | None:
    if t.lr_scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=t.lr_factor,
                                                          patience=t.lr_patience, min_lr=t.min_lr)
    if t.lr_scheduler == "cosine":
        # Closed form over this run's --num-epochs (a resumed run that extends them decays over the new total);
        # the checkpoint keeps the epoch count and the base rate.
        floor = min(t.min_lr / t.learning_rate, 1.0)
        horizon = max(1, t.num_epochs - 1)  # the last epoch runs at --min-lr

        def factor(epoch: int) -> float:
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(epoch, horizon) / horizon))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return None


def step(scheduler: Scheduler | None, val_loss: float) -> None:
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(val_loss)
    elif scheduler is not None:
        scheduler.step()


def reset_learning_rate(optimizer: torch.optim.Optimizer, scheduler: Scheduler | None, lr: float) -> None:
    """--reset-lr-on-resume: continue from `lr`, as graphcast's reset_learning_rate (a cosine decays on from it)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        if "initial_lr" in group:
            group["initial_lr"] = lr
    if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        scheduler.base_lrs = [lr for _ in optimizer.param_groups]
    elif isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.num_bad_epochs = 0
