"""SIGKILL of the search driver at five moments, then --resume: nothing finished is lost (slow: ~1 min each).

    python -m pytest -m slow tests/reliability            # these, and the other slow tests here
    python -m tests.reliability.inject --moment all       # the same runs as a script, one JSON line per moment
"""

from __future__ import annotations

import pytest

from tests.reliability.inject import MOMENTS, run_moment


@pytest.mark.slow
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_search_killed_with_sigkill_resumes_to_every_trial_finished(moment, tmp_path):
    report = run_moment(moment, tmp_path)
    assert report["killed_while_running"], report
    assert report["leftover_ray_processes_killed"] == 0, "the local Ray did not die with its driver"
    failed = [check for check, ok in report["checks"].items() if not ok]
    assert not failed, (failed, report, (tmp_path / f"{moment}.log").read_text()[-4000:])
