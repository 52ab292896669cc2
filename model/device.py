"""Device choice and the mixed-precision mode that goes with it."""

from __future__ import annotations

import torch

from data_io import ConfigError


def select_device(name: str = "auto") -> torch.device:
    """auto: cuda, then mps, then cpu. An explicit device that is not there is a ConfigError."""
    cuda, mps = torch.cuda.is_available(), _mps_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise ConfigError("--device cuda: no CUDA GPU is visible to PyTorch; use --device auto or --device cpu")
    if name == "mps" and not mps:
        raise ConfigError("--device mps: Apple's MPS backend is not available; use --device auto or --device cpu")
    if name not in ("cuda", "mps", "cpu"):
        raise ConfigError(f"--device {name}: unknown; choose auto, cuda, mps or cpu")
    return torch.device(name)


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def amp_dtype(device: torch.device, use_amp: bool) -> torch.dtype | None:
    """bf16 on CUDA where supported (else fp16, which needs a GradScaler), fp16 on MPS, none on CPU."""
    if not use_amp or device.type == "cpu":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float16


def peak_memory_mb(device: torch.device) -> float:
    """The peak memory the process took from the device since the last reset of the peaks. On CUDA the caching
    allocator's reserved peak: what a share's memory cap bounds, CUDA graphs' private pools included."""
    if device.type == "cuda":
        return torch.cuda.max_memory_reserved(device) / 2**20
    if device.type == "mps":
        return torch.mps.driver_allocated_memory() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
