"""Every metric against a brute-force numpy version, on data with NaN truth (a land mask and gaps)."""

import numpy as np
import pytest
import torch

from data_io import NormStats
from data_io.normalize import normalize_inplace
from model.metrics import denormalize, latitude_weights, mae, masked_sse, rmse, weighted_errors

LAT = np.array([-30.0, 0.0, 20.0, 60.0])


@pytest.fixture
def pair():
    """pred and truth shaped (batch, lead, channel, lat, lon), truth with masked cells."""
    rng = np.random.default_rng(0)
    pred = rng.standard_normal((3, 2, 2, 4, 5))
    truth = rng.standard_normal((3, 2, 2, 4, 5))
    truth[:, :, :, 1, 2] = np.nan  # a land cell
    truth[1, 0, 0] = np.nan  # a missing field
    return pred, truth


def test_latitude_weights_are_cosine_with_mean_one():
    w = latitude_weights(LAT)
    expected = np.cos(LAT * np.pi / 180) / np.mean(np.cos(LAT * np.pi / 180))
    np.testing.assert_allclose(w, expected)
    assert w.mean() == pytest.approx(1.0)


def test_masked_sse_skips_nan_truth(pair):
    pred, truth = pair
    sse, count = masked_sse(torch.tensor(pred), torch.tensor(truth))
    assert torch.isfinite(sse)
    np.testing.assert_allclose(sse.item(), np.nansum((pred - truth) ** 2), rtol=1e-6)
    assert count.item() == np.isfinite(truth).sum()


def test_masked_loss_has_finite_gradients_with_nan_truth(pair):
    pred, truth = pair
    p = torch.tensor(pred, requires_grad=True)
    sse, count = masked_sse(p, torch.tensor(truth))
    (sse / count).backward()
    expected = np.where(np.isfinite(truth), 2 * (pred - np.nan_to_num(truth)), 0) / np.isfinite(truth).sum()
    np.testing.assert_allclose(p.grad.numpy(), expected, rtol=1e-6, atol=1e-9)


def test_weighted_errors_per_lead_and_channel_match_brute_force(pair):
    pred, truth = pair
    w = latitude_weights(LAT)
    sse, sae, wsum = weighted_errors(torch.tensor(pred), torch.tensor(truth), torch.tensor(w))
    for lead in range(pred.shape[1]):
        p, t = pred[:, lead], truth[:, lead]
        ww = np.broadcast_to(w[:, None], t.shape) * np.isfinite(t)
        err = np.nan_to_num(p - t)
        for ch in range(pred.shape[2]):
            e, wc = err[:, ch], ww[:, ch]
            np.testing.assert_allclose(sse[lead, ch].item(), np.sum(wc * e**2), rtol=1e-6)
            np.testing.assert_allclose(sae[lead, ch].item(), np.sum(wc * np.abs(e)), rtol=1e-6)
            np.testing.assert_allclose(wsum[lead, ch].item(), wc.sum(), rtol=1e-6)


def test_latitude_weights_of_a_projected_grid_are_each_cells_cosine_with_mean_one():
    from tests._projected import lambert_grid

    _, _, lat, _ = lambert_grid(4, 5)
    w = latitude_weights(lat)
    assert w.shape == (4, 5)
    cos = [[np.cos(lat[i, j] * np.pi / 180) for j in range(5)] for i in range(4)]
    np.testing.assert_allclose(w, np.array(cos) / np.mean(cos))
    assert w.mean() == pytest.approx(1.0)


def test_weighted_errors_with_per_cell_weights_match_brute_force(pair):
    """A projected grid's (lat, lon) weights: each cell's own weight, summed over batch and cells."""
    from tests._projected import lambert_grid

    pred, truth = pair
    w = latitude_weights(lambert_grid(4, 5)[2])
    sse, sae, wsum = weighted_errors(torch.tensor(pred), torch.tensor(truth), torch.tensor(w))
    for lead, c in np.ndindex(pred.shape[1], pred.shape[2]):
        want = np.zeros(3)
        for b, i, j in np.ndindex(pred.shape[0], 4, 5):
            t = truth[b, lead, c, i, j]
            if np.isfinite(t):
                e = pred[b, lead, c, i, j] - t
                want += w[i, j] * np.array([e * e, abs(e), 1.0])
        got = [sse[lead, c].item(), sae[lead, c].item(), wsum[lead, c].item()]
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_rmse_and_mae_are_weighted_means(pair):
    pred, truth = pair
    w = latitude_weights(LAT)
    sse, sae, wsum = weighted_errors(torch.tensor(pred), torch.tensor(truth), torch.tensor(w))
    ww = np.broadcast_to(w[:, None], truth.shape) * np.isfinite(truth)
    err = np.nan_to_num(pred - truth)
    np.testing.assert_allclose(rmse(sse.sum(), wsum.sum()).item(), np.sqrt(np.sum(ww * err**2) / ww.sum()), rtol=1e-6)
    np.testing.assert_allclose(mae(sae.sum(), wsum.sum()).item(), np.sum(ww * np.abs(err)) / ww.sum(), rtol=1e-6)


def test_rmse_of_nothing_is_zero_not_nan():
    assert rmse(torch.tensor(0.0), torch.tensor(0.0)).item() == 0.0


def test_denormalize_inverts_normalize_for_tensors_and_arrays_including_log1p():
    stats = NormStats(["precipitation", "GPH@500"], np.array([0.5, 5700.0]), np.array([0.8, 60.0]),
                      np.array([True, False]))
    rng = np.random.default_rng(0)
    phys = np.stack([rng.gamma(1.0, 2.0, (6, 3, 4)), rng.normal(5700.0, 60.0, (6, 3, 4))], axis=1)
    z = phys.astype("float32")
    normalize_inplace(z, stats)
    as_array = denormalize(z.astype("float64"), stats)
    assert isinstance(as_array, np.ndarray) and as_array.dtype == np.float64
    np.testing.assert_allclose(as_array, phys, rtol=1e-5, atol=1e-4)
    tensors = tuple(torch.tensor(a) for a in (stats.mean, stats.std, stats.log))
    as_tensor = denormalize(torch.from_numpy(z[:, None]), tensors)  # (batch, lead, channel, lat, lon)
    assert as_tensor.dtype == torch.float32
    np.testing.assert_allclose(as_tensor[:, 0].numpy(), phys, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(denormalize(torch.from_numpy(z), stats).numpy(), as_tensor[:, 0].numpy())
