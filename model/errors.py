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
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        torch.mps.empty_cache()
