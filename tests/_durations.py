"""Seconds per test file on a 2-core machine, so that the suite hands xdist its longest groups first.

Refresh `tests/durations.json` from a full run of the README's test command with `--durations=0`:

    python -m pytest -q -m "not slow" -n 2 --dist loadgroup --durations=0 | python -m tests._durations
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

PATH = Path(__file__).with_name("durations.json")
# pytest's --durations lines: "12.34s call     tests/x/test_y.py::test_z[param]@group"
_LINE = re.compile(r"^\s*([\d.]+)s (?:setup|call|teardown)\s+([^:\s]+)::")


def load() -> dict[str, float]:
    return json.loads(PATH.read_text()) if PATH.is_file() else {}


def parse(lines) -> dict[str, float]:
    seconds: dict[str, float] = {}
    for line in lines:
        if m := _LINE.match(line):
            seconds[m.group(2)] = seconds.get(m.group(2), 0.0) + float(m.group(1))
    return {path: round(s, 1) for path, s in sorted(seconds.items(), key=lambda kv: -kv[1])}


if __name__ == "__main__":
    measured = parse(sys.stdin)
    if not measured:
        sys.exit("python -m tests._durations: no --durations lines on stdin; run pytest with --durations=0")
    PATH.write_text(json.dumps(measured, indent=1) + "\n")
    print(f"wrote {PATH} ({len(measured)} files, {sum(measured.values()):.0f} s)")
