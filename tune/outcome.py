"""How a trial ended: one enum for the searcher, the trainable, the table, the report and the retrain.

The values are the words users see in the trial table, trials.csv and `--status` (where `stopped-early` and
`stopped_early` are accepted for `stopped early`).
"""

from __future__ import annotations

import enum


class Outcome(str, enum.Enum):
    OK = "ok"
    STOPPED_EARLY = "stopped early"  # ASHA stopped it: its last val loss is a truncated, not a final, value
    OOM = "oom"
    DIVERGED = "diverged"
    ERROR = "error"
    SKIPPED = "skipped"  # the memory pre-flight predicted it would not fit: never launched
    PENDING = "pending"  # started, nothing reported yet (or not started)

    def __str__(self) -> str:
        return self.value

    @property
    def infeasible(self) -> bool:
        """The config itself cannot train (too big, or unstable): the searcher learns to avoid it."""
        return self in INFEASIBLE

    @property
    def fitted(self) -> bool:
        """The trial trained at least to a val loss that can rank it."""
        return self in FITTED

    @property
    def flag(self) -> str:
        """The spelling for a command line (`--status stopped-early`)."""
        return self.value.replace(" ", "-")

    @classmethod
    def parse(cls, text: str) -> Outcome:
        """An outcome from what a user typed (`stopped-early`, `stopped_early`, `stopped early`); ValueError else."""
        return cls(text.replace("_", " ").replace("-", " ").strip().lower())


INFEASIBLE = frozenset({Outcome.OOM, Outcome.DIVERGED, Outcome.SKIPPED})
FITTED = frozenset({Outcome.OK, Outcome.STOPPED_EARLY})
