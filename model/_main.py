"""What every CLI in the project shares: logging set-up and turning known failures into one line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from data_io import UserInputError
from model.errors import Diverged, OutOfMemory

EXIT_USAGE, EXIT_OOM, EXIT_DIVERGED = 2, 3, 4


class _CurrentStdout(logging.StreamHandler):
    """Writes to whatever sys.stdout is at each record: in-process callers (tests, notebooks) swap sys.stdout and
    close the old one, and a handler bound to it would print 'Logging error' tracebacks ever after."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stdout

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging(log_file: Path | None = None, level: int = logging.INFO) -> None:
    handlers: list[logging.Handler] = [_CurrentStdout()]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=level, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", handlers=handlers,
                        force=True)


def run_cli(main: Callable[[], int | None], prog: str) -> None:
    """Run main(); user errors become one line on stderr and a distinct exit code, never a traceback."""
    try:
        code = main()
    except UserInputError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        code = EXIT_USAGE
    except OutOfMemory as exc:
        print(
            f"{prog}: error: {exc}. The config does not fit: lower --batch-size (and raise "
            "--gradient-accumulation-steps to keep the effective batch) or use smaller --hidden-channels",
            file=sys.stderr,
        )
        code = EXIT_OOM
    except Diverged as exc:
        print(f"{prog}: error: training diverged: {exc}", file=sys.stderr)
        code = EXIT_DIVERGED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; checkpoints written so far are kept", file=sys.stderr)
        code = 130
    sys.exit(code or 0)
