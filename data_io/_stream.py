"""Pieces of the read pipeline: time chunks and the two sinks rows go to
(MemoryRows: an array in RAM; RowFile: a row-addressed .npy file of the cache). Both sinks have one interface,
so data_io.pipeline runs the same loop for either.

Nothing here but MemoryRows holds more than one chunk of one array in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def time_chunks(n_steps: int, step_bytes: int, budget_bytes: int) -> Iterator[tuple[int, int]]:
    """[t0, t1) ranges covering 0..n_steps whose rows take at most budget_bytes (at least one row each)."""
    size = max(1, budget_bytes // max(1, step_bytes))
    for t0 in range(0, n_steps, size):
        yield t0, min(n_steps, t0 + size)


class MemoryRows:
    """A float32 (T, ...) array in memory with RowFile's interface."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.array = np.empty(shape, dtype=np.float32)
        self.shape = shape
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * 4

    def write(self, positions: np.ndarray, rows: np.ndarray) -> None:
        self.array[positions] = rows

    def read(self, t0: int, t1: int) -> np.ndarray:
        return self.array[t0:t1]  # a view: normalising it in place is the rewrite

    def rewrite(self, t0: int, rows: np.ndarray) -> None:
        if not np.shares_memory(rows, self.array):
            self.array[t0 : t0 + len(rows)] = rows

    def close(self) -> None:
        pass


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
