"""Batches copied from the memory-mapped cache leave no mapped pages behind: an epoch's RSS stays at a batch's size,
not the cache's (model/batches._unmap)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.batches import _unmap


def _rss_file_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssFile in /proc/self/status")


def test_unmapping_returns_the_touched_cache_pages_and_keeps_the_values(tmp_path):
    values = np.random.default_rng(0).standard_normal((64, 256, 1024), dtype=np.float32)  # 64 MB
    np.save(tmp_path / "a.npy", values)
    mapped = np.load(tmp_path / "a.npy", mmap_mode="r")
    before = _rss_file_mb()
    assert float(np.asarray(mapped).sum()) == float(values.sum())  # touches every page
    touched = _rss_file_mb()
    _unmap([mapped[10:20], None])  # a view of the mapping, as the trainer's splits are
    after = _rss_file_mb()
    assert touched - before > 50 and touched - after > 50, (before, touched, after)
    np.testing.assert_array_equal(mapped[3], values[3])
