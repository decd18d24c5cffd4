"""Ctrl-C, crashes and kills: saved models stay whole, and a new run picks up where one stopped."""

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time

import h5py
import keras
import numpy as np
import pytest

import image_files
import keras_tools
from helpers import REPO, logged_scalars, make_images, run_in_process, stderr_lines


def start_script(script, *args, cwd):
    """Start a script as run_script does, without waiting for it, its output unbuffered."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(REPO / script), *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def saved_epoch(model_file):
    with h5py.File(model_file, "r") as saved:
        return int(saved.attrs["epoch"])


# In-process: Keras' own fit loop, with Ctrl-C pressed at a chosen moment.

def tiny_model():
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adadelta(learning_rate=1.0),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def tiny_data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(16, 4)).astype("float32")
    return x, keras.utils.to_categorical(x[:, 0] > 0, 2)


class PressCtrlC(keras.callbacks.Callback):
    """Sends this process SIGINT, as Ctrl-C does, at a batch of one epoch's training or validation."""

    def __init__(self, epoch, during, batch=2):
        super().__init__()
        self.at_epoch, self.during, self.batch = epoch, during, batch
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.during == "training" and (self.epoch, batch) == (self.at_epoch, self.batch):
            signal.raise_signal(signal.SIGINT)

    def on_test_batch_begin(self, batch, logs=None):
        if self.during == "validation" and (self.epoch, batch) == (self.at_epoch, 1):
            signal.raise_signal(signal.SIGINT)


class EpochRecorder(keras.callbacks.Callback):
    """What the callbacks that log epochs (TensorBoard, BestEpoch) see: each epoch's end and weights."""

    def __init__(self):
        super().__init__()
        self.epochs, self.weights = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)
        self.weights.append(self.model.get_weights())


def test_ctrl_c_during_training_steps_keeps_only_complete_epochs():
    model, (x, y), recorder = tiny_model(), tiny_data(), EpochRecorder()
    stop_on_ctrl_c = keras_tools.StopOnCtrlC(initial_epoch=0)
    with pytest.raises(keras_tools.EpochInterrupted):
        model.fit(x, y, batch_size=2, epochs=5, validation_data=tiny_data(1), verbose=0,
                  callbacks=[PressCtrlC(epoch=2, during="training"), recorder, stop_on_ctrl_c])
    # The third epoch was cut short: it was neither validated nor seen by any callback.
    assert stop_on_ctrl_c.interrupted and stop_on_ctrl_c.completed_epochs == 2
    assert recorder.epochs == [0, 1]
    assert sorted(stop_on_ctrl_c.last_epoch_logs) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # a second Ctrl-C quits

    # Back to the end of the second epoch, optimizer state included: 2 epochs of 8 steps.
    assert int(model.optimizer.iterations) == 2 * 8 + 3
    stop_on_ctrl_c.restore_last_epoch()
    assert all(np.array_equal(now, then) for now, then in zip(model.get_weights(), recorder.weights[-1]))
    assert int(model.optimizer.iterations) == 2 * 8


def test_ctrl_c_during_validation_keeps_the_epoch_it_ends():
    model, (x, y), recorder = tiny_model(), tiny_data(), EpochRecorder()
    stop_on_ctrl_c = keras_tools.StopOnCtrlC(initial_epoch=0)
    history = model.fit(x, y, batch_size=2, epochs=5, validation_data=tiny_data(1), verbose=0,
                        callbacks=[PressCtrlC(epoch=1, during="validation"), recorder, stop_on_ctrl_c])
    # The second epoch's training was complete: it is validated, logged and counted, then fit stops.
    assert stop_on_ctrl_c.interrupted and stop_on_ctrl_c.completed_epochs == 2
    assert recorder.epochs == history.epoch == [0, 1]
    assert stop_on_ctrl_c.last_epoch_logs["val_loss"] == history.history["val_loss"][-1]


def test_ctrl_c_before_the_first_epoch_ends_saves_nothing_and_says_so(tmp_path):
    model = tiny_model()
    stop_on_ctrl_c = keras_tools.StopOnCtrlC(initial_epoch=0)
    options = {"train_dir": "my photos/train", "epochs": 50, "initial_epoch": 0,
               "model_file": str(tmp_path / "model.h5"), "predict": None, "check_labels": False}
    message = keras_tools.save_interrupted_run(model, ["ant", "bee"], keras_tools.BestEpoch(),
                                               stop_on_ctrl_c, "FirstModel.py", options)
    assert message == ("Interrupted before the end of epoch 1; nothing saved. To start again: "
                       f"python FirstModel.py --train-dir 'my photos/train' --epochs 50 "
                       f"--initial-epoch 0 --model-file {tmp_path / 'model.h5'}")
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_in_the_first_epoch_of_a_resumed_run_saves_nothing_new(tmp_path):
    model_file = tmp_path / "model.h5"
    model_file.write_bytes(b"the model saved after epoch 3")
    options = {"epochs": 10, "initial_epoch": 3, "model_file": str(model_file)}
    message = keras_tools.save_interrupted_run(tiny_model(), ["ant", "bee"], keras_tools.BestEpoch(),
                                               keras_tools.StopOnCtrlC(initial_epoch=3), "SecondModel.py",
                                               options)
    assert message == (f"Interrupted before the end of epoch 4; nothing new to save: {model_file} still "
                       f"holds epoch 3. To go on: python SecondModel.py --epochs 10 --initial-epoch 3 "
                       f"--model-file {model_file}")
    assert [path.name for path in tmp_path.iterdir()] == ["model.h5"]
    assert model_file.read_bytes() == b"the model saved after epoch 3"


class FailingModel:
    """Stands for a Keras model whose save is cut short half-way through the file."""

    def save(self, path):
        with open(path, "wb") as file:
            file.write(b"\x89HDF half a model")
        raise KeyboardInterrupt

    save_weights = save

    def get_weights(self):
        return []

    def set_weights(self, weights):
        pass


def test_a_save_cut_short_leaves_the_previous_model_whole(tmp_path):
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(2)])
    model_file = str(tmp_path / "model.h5")
    keras_tools.save_run(model, model_file, ["ant", "bee"], keras_tools.BestEpoch(), 1, {})
    saved = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    assert sorted(saved) == ["model.h5", "model.last.h5", "model.last.weights.h5", "model.weights.h5"]

    with pytest.raises(KeyboardInterrupt):
        keras_tools.save_run(FailingModel(), model_file, ["ant", "bee"], keras_tools.BestEpoch(), 2, {})
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == saved
    assert keras.models.load_model(model_file).output_shape == (None, 2)


def test_a_set_of_files_is_replaced_all_together_or_not_at_all(tmp_path):
    names = ["model.h5", "model.weights.h5", "model.last.h5", "model.last.weights.h5"]
    for name in names:
        (tmp_path / name).write_text(f"old {name}")

    def write(text, fail=False):
        def save(path):
            with open(path, "w") as file:
                file.write(text)
            if fail:
                raise OSError(28, "No space left on device")
        return save

    # The third file fails: none is replaced, not even the first two, and nothing is left behind.
    with pytest.raises(OSError):
        image_files.save_files_atomically({str(tmp_path / name): write(f"new {name}", fail=index == 2)
                                      for index, name in enumerate(names)})
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(names)
    assert all((tmp_path / name).read_text() == f"old {name}" for name in names)

    # Ctrl-C while saving waits until the whole set is in place.
    def press_ctrl_c_while_saving(path):
        signal.raise_signal(signal.SIGINT)
        write("new model.last.h5")(path)

    saves = {str(tmp_path / name): write(f"new {name}") for name in names}
    saves[str(tmp_path / "model.last.h5")] = press_ctrl_c_while_saving
    image_files.save_files_atomically(saves)
    assert all((tmp_path / name).read_text() == f"new {name}" for name in names)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# End to end, as a user presses Ctrl-C in a terminal.

@pytest.mark.parametrize("script", ["FirstModel.py", "SecondModel.py"])
def test_ctrl_c_then_the_printed_command_finishes_the_run(script, tmp_path):
    # Folders with spaces, and flags that differ from the defaults: the command must keep them all.
    photos = tmp_path / "my photos"
    train_dir = make_images(photos / "train", {"apple": 30, "berry": 30}, seed=1)
    validation_dir = make_images(photos / "validation", {"apple": 3, "berry": 3}, seed=2)
    model_file = tmp_path / "model.h5"
    model_file.write_bytes(b"the model saved by an earlier run")
    epochs = 6

    process = start_script(script, "--train-dir", train_dir, "--validation-dir", validation_dir,
                           "--image-size", 24, "--batch-size", 1, "--epochs", epochs,
                           "--log-dir", tmp_path / "my logs", "--model-file", model_file, cwd=tmp_path)
    watchdog = threading.Timer(600, process.kill)  # never wait for ever on a script that hangs
    watchdog.start()
    try:
        for line in process.stdout:
            if line.startswith("Epoch 3/"):
                process.send_signal(signal.SIGINT)
                break
        stdout, stderr = process.communicate(timeout=600)
    finally:
        watchdog.cancel()

    assert process.returncode == 1
    lines = stderr_lines(subprocess.CompletedProcess(process.args, 1, stdout, stderr))
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    completed = int(lines[0].split()[3].rstrip(";"))
    partial_file = tmp_path / "model.partial.h5"
    best_epoch = saved_epoch(tmp_path / "model.partial.h5")
    saved = ", ".join(str(tmp_path / name) for name in (
        "model.partial.h5", "model.partial.weights.h5", "model.partial.last.h5",
        "model.partial.last.weights.h5"))
    assert lines[0].startswith(f"Interrupted after epoch {completed}; saved {saved} "
                               f"(kept: epoch {best_epoch}). To go on: python ")
    # Only complete epochs: two at least, as many as TensorBoard logged and the model file holds.
    assert 2 <= completed < epochs and 1 <= best_epoch <= completed
    assert saved_epoch(tmp_path / "model.partial.last.h5") == completed
    [first_run] = (tmp_path / "my logs").iterdir()
    assert sorted(logged_scalars(first_run / "validation")["epoch_loss"]) == list(range(completed))
    assert model_file.read_bytes() == b"the model saved by an earlier run"

    # The command printed goes on with the same folders and image size, up to the same epoch.
    command = shlex.split(lines[0].split("To go on: ")[1])
    assert command[:2] == ["python", str(REPO / script)]  # the script as it was started
    assert command[command.index("--train-dir") + 1] == str(train_dir)
    assert command[command.index("--image-size") + 1] == "24"
    resumed = run_in_process(script, *command[2:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert stderr_lines(resumed) == []
    assert f"Resuming {partial_file} after epoch {completed}" in resumed.stdout
    assert saved_epoch(tmp_path / "model.partial.last.h5") == epochs
    second_run = next(run for run in (tmp_path / "my logs").iterdir() if run != first_run)
    assert sorted(logged_scalars(second_run / "validation")["epoch_loss"]) == list(range(completed, epochs))
    with h5py.File(partial_file, "r") as saved_model:
        assert json.loads(saved_model.attrs["class_names"]) == ["apple", "berry"]
    assert keras.models.load_model(partial_file).input_shape == (None, 24, 24, 3)


def test_class_balancer_killed_half_way_completes_on_the_next_run(tmp_path):
    train_dir = make_images(tmp_path / "train", {"apple": 3, "berry": 2})
    validation_dir = make_images(tmp_path / "validation", {"apple": 1, "berry": 1})
    output_dir = tmp_path / "generated"
    arguments = ["--train-dir", train_dir, "--validation-dir", validation_dir,
                 "--output-dir", output_dir, "--train-target", 150, "--validation-target", 5]

    process = start_script("ClassImageAugmentationSample.py", *arguments, cwd=tmp_path)
    apples = output_dir / "train" / "apple"
    while process.poll() is None and len(list(apples.glob("Random_*"))) < 30:
        time.sleep(0.02)
    process.kill()
    process.wait()
    written = {path: path.read_bytes() for path in output_dir.rglob("Random_*")}
    assert 30 <= len(written) < 300 - 5

    result = run_in_process("ClassImageAugmentationSample.py", *arguments, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for split, target in (("train", 150), ("validation", 5)):
        for class_name in ("apple", "berry"):
            assert len(image_files.list_images(output_dir / split / class_name)) == target
    # What the killed run wrote is kept as it was.
    assert all(path.read_bytes() == data for path, data in written.items())
