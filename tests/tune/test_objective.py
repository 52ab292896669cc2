"""--objective parsing, the Pareto set and --pick on small tables (the multi-objective search runs in
test_multi_objective.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from data_io import ConfigError
from tune._objective import Objective, pareto, parse, pick, ray_metric

OBJECTIVES = [Objective("val_loss", "min"), Objective("time_per_epoch_s", "min")]


def _table(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["trial_id", "status", "val_loss", "time_per_epoch_s"])


def test_objectives_parse_with_min_as_the_default_mode():
    assert parse("val_loss,time_per_epoch_s") == OBJECTIVES
    assert parse("val_loss:min, samples_per_s:max") == [Objective("val_loss", "min"), Objective("samples_per_s", "max")]
    assert parse(None) == [Objective("val_loss", "min")]
    assert ray_metric(OBJECTIVES) == (["val_loss", "time_per_epoch_s"], ["min", "min"])
    assert ray_metric(parse("val_loss")) == ("val_loss", "min")


@pytest.mark.parametrize("text,named", [("val_los", "'val_los' is not a reported metric"),
                                        ("val_loss:up", "mode 'up' of val_loss"), ("val_loss,val_loss", "twice")])
def test_bad_objectives_are_refused_naming_the_flag(text, named):
    with pytest.raises(ConfigError, match=f"--objective {text}: .*{named}"):
        parse(text)


def test_pareto_set_is_the_trials_no_other_beats_on_both_among_those_that_trained():
    table = _table([
        ("a", "ok", 1.00, 10.0),  # best loss
        ("b", "ok", 1.01, 5.0),  # almost as good, twice as fast
        ("c", "ok", 1.05, 6.0),  # beaten by b on both
        ("d", "stopped early", 2.0, 1.0),  # fastest
        ("e", "oom", None, 0.1),  # never trained: not in the set however fast
        ("f", "ok", 1.00, 10.0),  # equal to a: neither beats the other
    ])
    assert list(table["trial_id"][pareto(table, OBJECTIVES)]) == ["a", "b", "d", "f"]
    worst_and_fastest = [Objective("val_loss", "max"), OBJECTIVES[1]]
    assert list(table["trial_id"][pareto(table, worst_and_fastest)]) == ["d"]


def test_fastest_within_picks_the_fastest_trial_near_the_best_first_objective():
    table = _table([("a", "ok", 1.00, 10.0), ("b", "ok", 1.019, 5.0), ("c", "ok", 1.03, 2.0), ("d", "ok", 2.0, 1.0)])
    assert pick(table, OBJECTIVES, "fastest-within 2%")["trial_id"] == "b"
    assert pick(table, OBJECTIVES, "fastest-within 0%")["trial_id"] == "a"
    assert pick(table, OBJECTIVES, "fastest-within 5%")["trial_id"] == "c"
    with pytest.raises(ConfigError, match="--pick fastest: expected 'fastest-within P%'"):
        pick(table, OBJECTIVES, "fastest")


def test_search_refuses_a_bad_objective_with_one_line_and_exit_2(tmp_path):
    import subprocess
    import sys

    from tests.tune.conftest import search_env

    done = subprocess.run([sys.executable, "-m", "tune.search", "--objective", "val_los", "--storage-path",
                           str(tmp_path)], capture_output=True, text=True, env=search_env(), timeout=120)
    assert done.returncode == 2, done.stderr
    assert "--objective val_los" in done.stderr and "Traceback" not in done.stderr
