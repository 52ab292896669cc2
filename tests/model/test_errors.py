import pytest
import torch

from model.errors import is_oom


@pytest.mark.parametrize(
    "exc",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB, other allocations: 1.2 GB)"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
    ],
)
def test_oom_errors_of_every_backend_are_recognised(exc):
    assert is_oom(exc)


@pytest.mark.parametrize(
    "exc", [RuntimeError("shape mismatch"), ValueError("out of memory"), KeyError("memory")]
)
def test_other_errors_are_not_oom(exc):
    assert not is_oom(exc)


def test_cli_logging_follows_a_swapped_stdout(capsys):
    import io
    import logging
    import sys

    from model._main import setup_logging

    first = io.StringIO()
    saved = sys.stdout
    try:
        sys.stdout = first
        setup_logging()
        logging.getLogger("convlstm").info("to the first")
        sys.stdout = second = io.StringIO()
        first.close()  # what pytest's capture does to the stream a handler was bound to
        logging.getLogger("convlstm").info("to the second")
    finally:
        sys.stdout = saved
        logging.basicConfig(force=True, handlers=[logging.NullHandler()])
    assert "to the second" in second.getvalue() and "Logging error" not in capsys.readouterr().err
