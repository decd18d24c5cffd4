"""The model scripts keep the last epoch and the best, lower the learning rate and stop early."""

import json
import math
import re

import h5py
import pytest

import keras_tools
from helpers import logged_scalars, make_images, run_in_process, stderr_lines
from test_first_model import FINAL_LINE

SCRIPTS = ["FirstModel", "SecondModel"]


def epoch_val_losses(stdout):
    """The val_loss Keras printed at the end of every epoch, in order."""
    return [float(re.search(r" val_loss: (\d+\.\d+)", line).group(1))
            for line in stdout.splitlines() if "/step - " in line]


def saved_epoch(model_file):
    with h5py.File(model_file, "r") as saved:
        return int(saved.attrs["epoch"]), json.loads(saved.attrs["metrics"])


@pytest.fixture
def misleading_dataset(tmp_path):
    """A validation set whose classes have each other's colours: val_loss rises as training learns."""
    train_dir = make_images(tmp_path / "train", {"apple": 8, "berry": 8}, seed=1)
    validation_dir = make_images(tmp_path / "validation", {"berry": 4, "apple": 4}, seed=2)
    return train_dir, validation_dir


@pytest.mark.parametrize("script", SCRIPTS)
def test_saves_the_last_epoch_and_the_epoch_of_lowest_val_loss(script, small_dataset, tmp_path):
    train_dir, validation_dir = small_dataset
    model_file = tmp_path / "model.h5"
    result = run_in_process(f"{script}.py", "--train-dir", train_dir, "--validation-dir", validation_dir,
                        "--epochs", 6, "--batch-size", 2, "--image-size", 32,
                        "--log-dir", tmp_path / "logs", "--model-file", model_file, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == []

    val_losses = epoch_val_losses(result.stdout)
    assert len(val_losses) == 6
    best = val_losses.index(min(val_losses)) + 1
    # The model file is the last epoch, as in 2018, and the last line is its figures.
    epoch, metrics = saved_epoch(model_file)
    assert epoch == 6
    final = FINAL_LINE.match(result.stdout.strip().splitlines()[-1])
    assert float(final.group(3)) == pytest.approx(val_losses[-1], abs=1e-4)
    assert float(final.group(4)) == pytest.approx(metrics["val_accuracy"], abs=1e-4)
    # The epoch of lowest val_loss is kept beside it.
    best_epoch, best_metrics = saved_epoch(tmp_path / "model.best.h5")
    assert best_epoch == best
    assert best_metrics["val_loss"] == pytest.approx(min(val_losses), abs=1e-4)
    assert (f"Lowest val_loss: epoch {best}, val_loss {min(val_losses):.4f}, val_accuracy "
            f"{best_metrics['val_accuracy']:.4f}, saved as {tmp_path / 'model.best.h5'}") in result.stdout
    for name in ("model.weights.h5", "model.best.weights.h5"):
        assert (tmp_path / name).is_file()


@pytest.mark.parametrize("script", SCRIPTS)
def test_lowers_the_learning_rate_then_stops_when_val_loss_stops_falling(
        script, misleading_dataset, tmp_path):
    train_dir, validation_dir = misleading_dataset
    result = run_in_process(
        f"{script}.py", "--train-dir", train_dir, "--validation-dir", validation_dir, "--epochs", 30,
        "--batch-size", 2, "--image-size", 32, "--log-dir", tmp_path / "logs",
        "--model-file", tmp_path / "model.h5", cwd=tmp_path,
        constants={"REDUCE_LR_PATIENCE": 1, "EARLY_STOPPING_PATIENCE": 3})
    assert result.returncode == 0, result.stderr

    val_losses = epoch_val_losses(result.stdout)
    best = val_losses.index(min(val_losses)) + 1
    # Three epochs without a lower val_loss after the best one, then no more.
    assert len(val_losses) == best + 3 < 30
    assert "Epoch 30/30" not in result.stdout
    assert saved_epoch(tmp_path / "model.best.h5")[0] == best
    assert saved_epoch(tmp_path / "model.h5")[0] == len(val_losses)

    [run] = (tmp_path / "logs").iterdir()
    learning_rates = logged_scalars(run / "train")["epoch_learning_rate"]
    # Halved after every epoch that did not beat the best.
    assert learning_rates[0] == 1.0
    assert min(learning_rates.values()) <= 0.25
    assert all(math.log2(rate).is_integer() for rate in learning_rates.values())


def test_a_resumed_run_replaces_the_best_epoch_only_with_a_better_one(misleading_dataset, tmp_path):
    script = "SecondModel"
    train_dir, validation_dir = misleading_dataset
    arguments = ["--train-dir", train_dir, "--validation-dir", validation_dir, "--batch-size", 2,
                 "--image-size", 32, "--log-dir", tmp_path / "logs",
                 "--model-file", tmp_path / "model.h5"]
    first = run_in_process(f"{script}.py", *arguments, "--epochs", 2, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    resumed = run_in_process(f"{script}.py", *arguments, "--initial-epoch", 2, "--epochs", 5, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resuming {tmp_path / 'model.h5'} after epoch 2" in resumed.stdout
    assert saved_epoch(tmp_path / "model.h5")[0] == 5

    # The best epoch kept is the best of all five, before and after the resume.
    val_losses = epoch_val_losses(first.stdout) + epoch_val_losses(resumed.stdout)
    assert len(val_losses) == 5
    epoch, metrics = saved_epoch(tmp_path / "model.best.h5")
    assert epoch == val_losses.index(min(val_losses)) + 1
    assert metrics["val_loss"] == pytest.approx(min(val_losses), abs=1e-4)


def test_a_nan_val_loss_is_never_the_best_epoch():
    class FakeModel:
        def __init__(self):
            self.weights = 0

        def get_weights(self):
            return self.weights

    model, best_epoch = FakeModel(), keras_tools.BestEpoch()
    best_epoch.set_model(model)
    for epoch, val_loss in enumerate([float("nan"), 0.9, float("nan"), 0.7, 0.8]):
        model.weights = epoch
        best_epoch.on_epoch_end(epoch, {"val_loss": val_loss, "val_accuracy": 0.5})
    assert (best_epoch.epoch, best_epoch.weights, best_epoch.metrics["val_loss"]) == (4, 3, 0.7)

    # A NaN kept by a run saved before this check is beaten by the first number.
    resumed = keras_tools.BestEpoch(epoch=2, metrics={"val_loss": float("nan")}, weights="old")
    resumed.set_model(model)
    resumed.on_epoch_end(5, {"val_loss": 1.5})
    assert (resumed.epoch, resumed.metrics["val_loss"]) == (6, 1.5)
