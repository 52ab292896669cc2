import pytest
import torch

from data_io import ConfigError
from model.device import amp_dtype, select_device


def fake(monkeypatch, cuda: bool, mps: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    fake(monkeypatch, cuda, mps)
    assert select_device("auto").type == expected


@pytest.mark.parametrize("name", ["cuda", "mps"])
def test_asking_for_a_missing_device_names_the_flag(monkeypatch, name):
    fake(monkeypatch, cuda=False, mps=False)
    with pytest.raises(ConfigError, match=f"--device {name}: .*use --device auto or --device cpu"):
        select_device(name)


def test_explicit_devices_that_exist_are_used(monkeypatch):
    fake(monkeypatch, cuda=True, mps=True)
    assert select_device("cuda").type == "cuda"
    assert select_device("mps").type == "mps"
    assert select_device("cpu").type == "cpu"


def test_amp_is_off_on_cpu_and_fp16_on_mps():
    assert amp_dtype(torch.device("cpu"), use_amp=True) is None
    assert amp_dtype(torch.device("mps"), use_amp=True) == torch.float16
    assert amp_dtype(torch.device("mps"), use_amp=False) is None
