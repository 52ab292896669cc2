"""Training outcomes that are not bugs: the search records them, the CLI prints one line."""

from __future__ import annotations

import gc

import torch


class OutOfMemory(RuntimeError):
    """The config does not fit on the device. Raised after the trainer has released what it held."""

    def __init__(self, message: str, peak_memory_mb: float = float("nan")) -> None:
        super().__init__(message)
        self.peak_memory_mb = peak_memory_mb


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


def is_oom(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the RuntimeError MPS (and the CPU allocator) raise when memory runs out."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def release_memory() -> None:
    """Collect, then hand the caching allocators' free memory back, so the next fit of this process starts clean."""
    gc.collect()
    if torch.cuda.is_available():
        # cuBLAS keeps a workspace (96 MB on an H200) per stream it has run on, for the life of the process; every
        # fit's CUDA graphs run on streams of their own, so without this a reused trial actor grew by 96 MB per
        # U-Net trial (576 MB after 16 of the pre-flight benchmark's configs; BENCHMARKS §11).
        clear_workspaces = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
        if clear_workspaces is not None:
            clear_workspaces()
        torch.cuda.empty_cache()
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        torch.mps.empty_cache()
