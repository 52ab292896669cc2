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
