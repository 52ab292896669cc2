"""The search's ASHA: OOM / diverged reports (val_loss inf) must not disable early stopping."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from tune._runner import _FeasibleASHA


def _decisions(reports: list[tuple[str, float]]) -> list[str]:
    scheduler = _FeasibleASHA(time_attr="training_iteration", metric="val_loss", mode="min", max_t=4,
                              grace_period=1, reduction_factor=2)
    decisions = []
    for i, (status, val_loss) in enumerate(reports):
        trial = SimpleNamespace(trial_id=f"t{i}")
        scheduler.on_trial_add(None, trial)
        result = {"training_iteration": 1, "val_loss": val_loss, "status": status}
        decisions.append(scheduler.on_trial_result(None, trial, result))
        if status != "ok":  # an OOM / diverged report is the trial's last
            scheduler.on_trial_complete(None, trial, result)
    return decisions


@pytest.mark.filterwarnings("error::RuntimeWarning")  # inf in a rung: NaN cutoffs from np.nanpercentile
def test_asha_still_stops_a_worse_trial_after_oom_trials():
    reports = [("oom", math.inf), ("oom", math.inf), ("ok", 1.0), ("ok", 2.0)]
    assert _decisions(reports) == ["CONTINUE", "CONTINUE", "CONTINUE", "STOP"]


def test_asha_stops_the_same_trials_with_or_without_oom_trials_between_them():
    finite = [("ok", 1.0), ("ok", 0.5), ("ok", 2.0), ("ok", 0.7)]
    with_oom = [finite[0], ("diverged", math.inf), finite[1], ("oom", math.inf), finite[2], finite[3]]
    kept = [d for d, (status, _) in zip(_decisions(with_oom), with_oom) if status == "ok"]
    assert kept == _decisions(finite)
