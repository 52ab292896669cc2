"""Checkpoints: written atomically, self-describing (config + normalisation + grid), loadable anywhere.

A checkpoint holds only tensors, numbers, strings, lists and dicts, and is read with `torch.load(weights_only=True)`:
opening a colleague's or a downloaded file never runs code from it. The file ends in a zip comment holding the
SHA-256 of everything before it, so a truncated or corrupted file is refused before it is unpickled.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import random
import re
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from data_io import ConfigError, NormStats
from model.build import model_from_config
from model.config import SECTIONS, Config
from model.convlstm import ConvLSTMForecaster

_DIGEST_TAG = b"convlstm-sha256:"
_EOCD = b"PK\x05\x06"  # zip end-of-central-directory record; torch writes it last, 22 bytes, without a comment
# Release 0.1.0 stored NumPy's RNG state as an ndarray: the only foreign types an old checkpoint may need, and
# ones that rebuild an array without calling anything else.
_LEGACY_NUMPY = [np.dtype, np.ndarray, np.dtypes.UInt32DType]
for _name in ("numpy._core.multiarray", "numpy.core.multiarray"):
    try:
        _LEGACY_NUMPY.append(__import__(_name, fromlist=["_reconstruct"])._reconstruct)
        break
    except (ImportError, AttributeError):
        continue
_UNSUPPORTED = re.compile(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)")


class CheckpointError(ConfigError):
    """A checkpoint file that is missing, damaged, or would need code to load."""


def save_atomic(state: dict, path: str | Path) -> Path:
    """Write to a temp file in the same folder, fsync, rename: a crash leaves the old file intact.

    The zip archive torch writes gets a comment holding the SHA-256 of all the bytes before it (load checks it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w+b") as f:
            torch.save(state, f)
            _append_digest(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _append_digest(f) -> None:
    f.flush()
    f.seek(-22, os.SEEK_END)
    eocd = f.read(22)
    if eocd[:4] != _EOCD or eocd[-2:] != b"\0\0":
        raise RuntimeError("torch.save wrote an unexpected zip layout; the checkpoint digest cannot be added")
    f.seek(-2, os.SEEK_END)
    f.write(struct.pack("<H", len(_DIGEST_TAG) + 64))
    f.flush()
    f.seek(0)
    digest = hashlib.sha256()
    while chunk := f.read(1 << 20):
        digest.update(chunk)
    f.seek(0, os.SEEK_END)
    f.write(_DIGEST_TAG + digest.hexdigest().encode())


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint's dict, or CheckpointError in one line naming the file (missing, damaged, or unsafe)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint; pass a .pt file written by the trainer")
    _check_intact(path)
    try:
        with torch.serialization.safe_globals(_LEGACY_NUMPY):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _UNSUPPORTED.search(str(exc))
        if found is None:
            raise CheckpointError(f"{path}: not a readable checkpoint (damaged: {_first_line(exc)}); "
                                  "pass best.pt or last.pt") from None
        raise CheckpointError(f"{path}: refused: loading it would call {found.group(1)}, and a checkpoint of this "
                              "trainer holds only tensors, numbers, strings, lists and dicts; "
                              "use a checkpoint written by the trainer") from None
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}); "
                              "pass best.pt or last.pt") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: holds a {type(ckpt).__name__}, not a checkpoint dict; pass best.pt or last.pt")
    return ckpt


def _check_intact(path: Path) -> None:
    """Every zip member's CRC, and the whole file's digest where the file carries one (all but 0.1.0 files)."""
    raw = path.read_bytes()
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            bad = z.testzip()
            comment = z.comment
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or not a torch file: "
                              f"{_first_line(exc)}); pass best.pt or last.pt") from None
    if bad is not None:
        raise CheckpointError(f"{path}: not a readable checkpoint (damaged: member {bad} fails its CRC); "
                              "use another copy of it")
    if not comment and raw[-22:-18] == _EOCD and raw[-2:] == b"\0\0":
        return  # written by release 0.1.0, before the digest: the CRCs are all there is
    want = raw[-64:].decode("ascii", "replace")
    body = raw[: -(len(_DIGEST_TAG) + 64)]
    if comment[: len(_DIGEST_TAG)] != _DIGEST_TAG or hashlib.sha256(body).hexdigest() != want:
        raise CheckpointError(f"{path}: not a readable checkpoint (damaged: its SHA-256 differs from the one it was "
                              "written with); use another copy of it")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]


def rng_state() -> dict:
    """Python's, NumPy's and torch's generators as tensors and numbers (what weights_only loading accepts)."""
    version, internal, gauss = random.getstate()
    key, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"key": key, "state": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py, npy = state["python"], state["numpy"]
    if isinstance(py, dict):
        random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
        np.random.set_state((npy["key"], npy["state"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                             npy["cached_gaussian"]))
    else:  # release 0.1.0: the generators' own tuples
        random.setstate(py)
        np.random.set_state(npy)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def config_from_checkpoint(ckpt: dict) -> Config:
    from model._cli import build

    return build(Config, {k: ckpt["config"][k] for k in SECTIONS}, "checkpoint config")


def model_from_checkpoint(ckpt: dict) -> ConvLSTMForecaster:
    """Rebuild the architecture from the stored config and meta, then load the weights."""
    config, meta = config_from_checkpoint(ckpt), ckpt["meta"]
    model = model_from_config(config, len(meta["channels"]), len(meta["target_channels"]),
                              upstream=bool(meta["upstream_shape"]))
    model.load_state_dict(ckpt["model"])
    return model


def stats_from_checkpoint(ckpt: dict) -> tuple[NormStats, NormStats]:
    return NormStats.from_dict(ckpt["input_stats"]), NormStats.from_dict(ckpt["target_stats"])


def plain(value):
    """NumPy scalars and arrays (e.g. netCDF attributes) as Python numbers and lists, recursively."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value
