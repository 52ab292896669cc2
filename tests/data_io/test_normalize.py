import numpy as np
import pytest

from data_io import NormStats
from data_io.normalize import fit_channel, normalize_inplace


def fitted(x: np.ndarray, log: list[bool]) -> NormStats:
    pairs = [fit_channel(x[:, c], flag) for c, flag in enumerate(log)]
    mean, std = (np.array(v) for v in zip(*pairs))
    return NormStats([f"c{c}" for c in range(len(log))], mean, std, np.array(log))


@pytest.fixture
def sample() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = np.empty((30, 3, 4, 5), dtype=np.float32)
    x[:, 0] = 1000 + 50 * rng.standard_normal((30, 4, 5))  # geopotential-like
    x[:, 1] = rng.gamma(0.4, 10.0, (30, 4, 5)) * (rng.random((30, 4, 5)) > 0.5)  # rain with dry cells
    x[:, 2] = -5 + rng.standard_normal((30, 4, 5))
    return x


def test_normalised_channels_have_zero_mean_unit_std(sample):
    stats = fitted(sample, [False, True, False])
    z = sample.copy()
    normalize_inplace(z, stats)
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, atol=1e-5)


def test_log_channel_is_clipped_at_zero_then_log1p_d():
    x = np.array([-3.0, 0.0, np.e - 1, np.nan])
    mean, std = fit_channel(x, log=True)
    np.testing.assert_allclose([mean, std], [np.mean([0, 0, 1]), np.std([0, 0, 1])])


def test_all_nan_channel_fits_to_nan_without_warnings():
    with np.testing.assert_no_warnings():
        mean, std = fit_channel(np.full((4, 3), np.nan), log=False)
    assert np.isnan(mean) and np.isnan(std)


def test_stats_survive_a_round_trip_through_a_dict(sample):
    stats = fitted(sample, [False, True, False])
    back = NormStats.from_dict(stats.to_dict())
    assert back.channels == stats.channels
    np.testing.assert_array_equal(back.mean, stats.mean)
    np.testing.assert_array_equal(back.log, stats.log)
    sub = stats.select(["c2", "c1"])
    np.testing.assert_array_equal(sub.std, stats.std[[2, 1]])
