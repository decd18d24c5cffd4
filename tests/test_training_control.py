"""The model scripts keep the epoch of highest val_accuracy and the last, lower the learning rate
and stop early."""

import json
import math
import re

import h5py
import pytest

import training
from helpers import save_model, FINAL_LINE, logged_scalars, make_images, run_in_process, stderr_lines

SCRIPTS = ["FirstModel", "SecondModel"]


def epoch_val_losses(stdout):
    """The val_loss Keras printed at the end of every epoch, in order."""
    return [float(re.search(r" val_loss: (\d+\.\d+)", line).group(1))
            for line in stdout.splitlines() if "/step - " in line]


def epoch_val_accuracies(stdout):
    return [float(re.search(r" val_accuracy: (\d+\.\d+)", line).group(1))
            for line in stdout.splitlines() if "/step - " in line]


def kept_epoch(val_accuracies, val_losses):
    """The epoch a run keeps, counted from 1: highest val_accuracy, the lower val_loss on a tie."""
    return max(range(len(val_losses)), key=lambda epoch: (val_accuracies[epoch], -val_losses[epoch])) + 1


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
def test_keeps_the_epoch_of_highest_val_accuracy_and_the_last_beside_it(script, small_dataset, tmp_path):
    train_dir, validation_dir = small_dataset
    model_file = tmp_path / "model.h5"
    result = run_in_process(f"{script}.py", "--train-dir", train_dir, "--validation-dir", validation_dir,
                            "--epochs", 6, "--batch-size", 2, "--image-size", 32,
                            "--log-dir", tmp_path / "logs", "--model-file", model_file, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == []

    val_losses, val_accuracies = epoch_val_losses(result.stdout), epoch_val_accuracies(result.stdout)
    assert len(val_losses) == 6
    kept = kept_epoch(val_accuracies, val_losses)
    # The model file is the kept epoch, and the last line is its figures.
    epoch, metrics = saved_epoch(model_file)
    assert epoch == kept
    assert metrics["val_accuracy"] == pytest.approx(max(val_accuracies), abs=1e-4)
    final = FINAL_LINE.match(result.stdout.strip().splitlines()[-1])
    assert float(final.group(3)) == pytest.approx(val_losses[kept - 1], abs=1e-4)
    assert float(final.group(4)) == pytest.approx(max(val_accuracies), abs=1e-4)
    assert (f"Kept in {model_file}: epoch {kept} of 6, the one of highest val_accuracy; the last epoch, "
            f"which --initial-epoch goes on from, is in {tmp_path / 'model.last.h5'}") in result.stdout
    # The last epoch is beside it, with its own figures.
    last_epoch, last_metrics = saved_epoch(tmp_path / "model.last.h5")
    assert last_epoch == 6
    assert last_metrics["val_loss"] == pytest.approx(val_losses[-1], abs=1e-4)
    for name in ("model.weights.h5", "model.last.weights.h5"):
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
    assert saved_epoch(tmp_path / "model.h5")[0] == kept_epoch(epoch_val_accuracies(result.stdout), val_losses)
    assert saved_epoch(tmp_path / "model.last.h5")[0] == len(val_losses)

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
    assert saved_epoch(tmp_path / "model.last.h5")[0] == 5

    # The epoch kept is the best of all five, before and after the resume.
    val_losses = epoch_val_losses(first.stdout) + epoch_val_losses(resumed.stdout)
    val_accuracies = epoch_val_accuracies(first.stdout) + epoch_val_accuracies(resumed.stdout)
    assert len(val_losses) == 5
    epoch, metrics = saved_epoch(tmp_path / "model.h5")
    assert epoch == kept_epoch(val_accuracies, val_losses)
    assert metrics["val_accuracy"] == pytest.approx(max(val_accuracies), abs=1e-4)


def kept_by_the_rule(epochs, kept_metrics=None):
    """(epoch counted from 1, its metrics) that training.better keeps among epochs' (val_accuracy, val_loss) in turn."""
    kept = None
    for epoch, (val_accuracy, val_loss) in enumerate(epochs, start=1):
        logs = {"val_accuracy": val_accuracy, "val_loss": val_loss}
        if training.better(logs, kept_metrics):
            kept, kept_metrics = epoch, logs
    return kept, kept_metrics


def test_the_epoch_kept_has_the_highest_val_accuracy_then_the_lowest_val_loss(tmp_path):
    kept, metrics = kept_by_the_rule([(0.5, 0.6), (0.75, 0.9), (0.75, 0.8), (0.7, 0.1), (0.75, 0.85)])
    assert (kept, metrics["val_loss"]) == (3, 0.8)
    # What the model files get: the kept epoch, or the last when none was kept.
    checkpoint = training.Checkpoint(str(tmp_path / "model.h5"), {"epochs": 5}, 5, False)
    checkpoint.last_metrics = {"val_loss": 0.85}
    assert checkpoint.kept_and_last("last weights") == ((5, {"val_loss": 0.85}, "last weights"),) * 2
    checkpoint.kept_epoch, checkpoint.kept_metrics, checkpoint.kept_weights = 3, metrics, "kept weights"
    assert checkpoint.kept_and_last("last weights")[0] == (3, metrics, "kept weights")


def test_a_nan_val_loss_is_never_the_best_epoch():
    nan = float("nan")
    kept, metrics = kept_by_the_rule([(0.5, nan), (0.5, 0.9), (0.5, nan), (0.5, 0.7), (0.5, 0.8)])
    assert (kept, metrics["val_loss"]) == (4, 0.7)
    # A NaN kept by a run saved before this check is beaten by the first number.
    assert training.better({"val_loss": 1.5, "val_accuracy": 0.25}, {"val_loss": nan, "val_accuracy": 0.9})


def test_the_model_file_holds_the_kept_weights_and_the_last_file_the_last(tmp_path):
    import keras
    import numpy as np

    model = keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(1, use_bias=False)])
    kept_weights = [np.array([[1.0], [2.0]])]
    model.set_weights([np.array([[7.0], [8.0]])])  # the last epoch, 5, still in the model
    save_model(model, tmp_path / "model.h5", ["ant", "bee"], 5, {"val_loss": 0.9, "val_accuracy": 0.5},
               kept=(3, {"val_loss": 0.5, "val_accuracy": 0.75}, kept_weights))

    def saved_weights(name):
        return keras.models.load_model(tmp_path / name).get_weights()[0].ravel().tolist()

    assert (saved_epoch(tmp_path / "model.h5")[0], saved_weights("model.h5")) == (3, [1.0, 2.0])
    assert (saved_epoch(tmp_path / "model.last.h5")[0], saved_weights("model.last.h5")) == (5, [7.0, 8.0])
