"""Pieces of the out-of-core path: time chunks, per-channel moments merged chunk by chunk, row-addressed .npy files.

Nothing here holds more than one chunk of one array in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from data_io.normalize import forward_transform


def time_chunks(n_steps: int, step_bytes: int, budget_bytes: int) -> Iterator[tuple[int, int]]:
    """[t0, t1) ranges covering 0..n_steps whose rows take at most budget_bytes (at least one row each)."""
    size = max(1, budget_bytes // max(1, step_bytes))
    for t0 in range(0, n_steps, size):
        yield t0, min(n_steps, t0 + size)


class ChannelMoments:
    """Count, mean and sum of squared deviations per channel, in float64, NaNs skipped.

    Chunks are merged with Chan et al.'s pairwise update, so the result equals one pass of np.nanmean/np.nanstd
    over the concatenated chunks (to rounding) without the cancellation of a sum-of-squares formula.
    """

    def __init__(self, log: list[bool]) -> None:
        self.log = list(log)
        n = len(self.log)
        self.count = np.zeros(n, dtype=np.int64)
        self.mean = np.zeros(n, dtype=np.float64)
        self.m2 = np.zeros(n, dtype=np.float64)

    def update(self, chunk: np.ndarray) -> None:
        """chunk: (t, C, H, W) raw values, C in the order of ``log``."""
        for c, is_log in enumerate(self.log):
            x = forward_transform(chunk[:, c].astype(np.float64), is_log)
            x = x[np.isfinite(x)]
            if x.size == 0:
                continue
            n_b, mean_b = x.size, float(x.mean())
            m2_b = float(np.square(x - mean_b).sum())
            n_a = self.count[c]
            n = n_a + n_b
            delta = mean_b - self.mean[c]
            self.mean[c] += delta * n_b / n
            self.m2[c] += m2_b + delta * delta * n_a * n_b / n
            self.count[c] = n

    def results(self) -> list[tuple[float, float]]:
        """(mean, population std) per channel; (nan, nan) for a channel that had no finite value."""
        out = []
        for n, mean, m2 in zip(self.count, self.mean, self.m2):
            out.append((float(mean), float(np.sqrt(m2 / n))) if n else (float("nan"), float("nan")))
        return out


class RowFile:
    """A float32 .npy file of shape (T, ...) written and rewritten by rows with pwrite/pread.

    Plain file I/O instead of a writable memmap: the rows pass through the page cache but are never mapped into
    this process, so building a cache larger than RAM leaves the builder's RSS at one chunk.
    """

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        header = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)  # header + sparse body
        self.offset, self.shape = header.offset, shape
        del header
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * 4
        self._fd = os.open(path, os.O_RDWR)

    def write(self, positions: np.ndarray, rows: np.ndarray) -> None:
        """rows[i] goes to row positions[i]; runs of consecutive positions are written with one call each."""
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        breaks = np.flatnonzero(np.diff(positions) != 1) + 1
        for run in np.split(np.arange(len(positions)), breaks):
            if run.size:
                self._pwrite(rows[run[0] : run[-1] + 1], int(positions[run[0]]))

    def read(self, t0: int, t1: int) -> np.ndarray:
        out = np.empty((t1 - t0, *self.shape[1:]), dtype=np.float32)
        view, pos = memoryview(out).cast("B"), self.offset + t0 * self.row_bytes
        while view:
            n = os.preadv(self._fd, [view], pos)
            if n <= 0:
                raise OSError(f"short read at byte {pos}")
            view, pos = view[n:], pos + n
        return out

    def rewrite(self, t0: int, rows: np.ndarray) -> None:
        self._pwrite(np.ascontiguousarray(rows, dtype=np.float32), t0)

    def _pwrite(self, rows: np.ndarray, t0: int) -> None:
        view, pos = memoryview(rows).cast("B"), self.offset + t0 * self.row_bytes
        while view:
            n = os.pwrite(self._fd, view, pos)
            view, pos = view[n:], pos + n

    def close(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
