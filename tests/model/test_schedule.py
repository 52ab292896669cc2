"""Learning-rate schedules: graphcast's plateau defaults, cosine, state kept across a resume, --reset-lr-on-resume."""

import pytest
import torch

from data_io import DataConfig, prepare
from model import Config, ModelConfig, TrainConfig
from model._schedule import make_scheduler
from model.trainer import Trainer


def test_plateau_has_graphcasts_defaults():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    plateau = make_scheduler(opt, TrainConfig(lr_scheduler="plateau"))
    assert (plateau.factor, plateau.patience, plateau.min_lrs) == (0.9, 20, [1e-6])
    assert make_scheduler(opt, TrainConfig()) is None


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from data_io.demo import make_demo

    path = tmp_path_factory.mktemp("data") / "demo.nc"
    make_demo(seed=0, days=30, resolution=5.0)[["precipitation", "TEM"]].to_netcdf(path)
    return prepare(DataConfig(data=str(path)))


class Interrupted(Exception):
    pass


def _run(data, out, stop_after: int | None = None, **train) -> Trainer:
    train = {"learning_rate": 1e-2, **train}
    t = TrainConfig(output_dir=str(out), num_workers=0, seed=1, batch_size=8, early_stopping_patience=100, **train)
    trainer = Trainer(Config(data=DataConfig(), model=ModelConfig(hidden_channels=[4]), train=t), data,
                      torch.device("cpu"))

    def on_epoch(record, last, final):
        if record.epoch == stop_after:
            raise Interrupted

    try:
        trainer.run(on_epoch)
    except Interrupted:
        pass
    return trainer


def test_cosine_decays_per_epoch_and_a_resume_continues_it_exactly(data, tmp_path):
    whole = _run(data, tmp_path / "whole", lr_scheduler="cosine", num_epochs=4, min_lr=1e-4)
    lrs = [r.learning_rate for r in whole.history]
    assert lrs[0] == pytest.approx(1e-2) and lrs[-1] == pytest.approx(1e-4)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    _run(data, tmp_path / "part", stop_after=2, lr_scheduler="cosine", num_epochs=4, min_lr=1e-4)
    resumed = _run(data, tmp_path / "part", lr_scheduler="cosine", num_epochs=4, min_lr=1e-4,
                   resume=str(tmp_path / "part" / "last.pt"))
    assert [r.learning_rate for r in resumed.history] == pytest.approx(lrs)
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(value, resumed.model.state_dict()[name], rtol=0, atol=1e-6)


def test_plateau_cuts_the_rate_and_reset_lr_on_resume_restores_it(data, tmp_path):
    # patience 0 with a large rate: any epoch that does not improve cuts the rate by the factor.
    first = _run(data, tmp_path / "run", lr_scheduler="plateau", lr_patience=0, lr_factor=0.5, num_epochs=4,
                 learning_rate=0.5)
    cut = first.optimizer.param_groups[0]["lr"]
    assert cut < 0.5, "the plateau schedule cut the rate"
    kept = _run(data, tmp_path / "kept", lr_scheduler="plateau", lr_patience=0, lr_factor=0.5, num_epochs=5,
                learning_rate=0.5, resume=str(tmp_path / "run" / "last.pt"))
    assert kept.history[-1].learning_rate == pytest.approx(cut)
    reset = _run(data, tmp_path / "run", lr_scheduler="plateau", lr_patience=0, lr_factor=0.5, num_epochs=5,
                 learning_rate=0.5, resume=str(tmp_path / "run" / "last.pt"), reset_lr_on_resume=True)
    assert reset.history[-1].learning_rate == pytest.approx(0.5)
