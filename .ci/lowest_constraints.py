"""Print pip constraints that pin every direct dependency of pyproject.toml (and its dev extra) to its floor.

`pip install -c` with them is uv's `--resolution lowest-direct`: the direct dependencies at their lowest allowed
versions, everything they pull in at whatever pip resolves. A dependency without a `>=` floor is left free.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def floors(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = project["dependencies"] + project.get("optional-dependencies", {}).get("dev", [])
    pins = []
    for req in requirements:
        match = re.match(r"^\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)$", req)
        name, spec = match.group(1), match.group(3)
        low = re.search(r">=\s*([^,;\s]+)", spec)
        exact = re.search(r"==\s*([^,;\s]+)", spec)
        if low or exact:
            pins.append(f"{name}=={(exact or low).group(1)}")
    return pins


if __name__ == "__main__":
    print("\n".join(floors(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml"))))
