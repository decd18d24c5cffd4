"""Ctrl-C, SIGTERM and SIGHUP inside Keras' fit loop and while saving: complete epochs only,
partial sets of their own, and whole files; the runs as users stop them are in test_stopped_runs.py."""

import os
import signal
import sys

import keras
import numpy as np
import pytest

import image_files
import keras_tools
from helpers import saved_epoch

STOPS = {signal.Signals(number).name: number for number in image_files.STOP_SIGNALS}


# In-process: Keras' own fit loop, with a stop signal at a chosen moment.

def tiny_model():
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adadelta(learning_rate=1.0),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def tiny_data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(16, 4)).astype("float32")
    return x, keras.utils.to_categorical(x[:, 0] > 0, 2)


class PressStop(keras.callbacks.Callback):
    """Sends this process a stop signal (SIGINT is Ctrl-C) at a batch of one epoch's training or validation."""

    def __init__(self, epoch, during, signal_number=signal.SIGINT, batch=2):
        super().__init__()
        self.at_epoch, self.during, self.signal_number, self.batch = epoch, during, signal_number, batch
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.during == "training" and (self.epoch, batch) == (self.at_epoch, self.batch):
            signal.raise_signal(self.signal_number)

    def on_test_batch_begin(self, batch, logs=None):
        if self.during == "validation" and (self.epoch, batch) == (self.at_epoch, 1):
            signal.raise_signal(self.signal_number)


class EpochRecorder(keras.callbacks.Callback):
    """What the callbacks that log epochs (TensorBoard, BestEpoch) see: each epoch's end and weights."""

    def __init__(self):
        super().__init__()
        self.epochs, self.weights = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)
        self.weights.append(self.model.get_weights())


@pytest.mark.parametrize("stop", list(STOPS))
def test_a_stop_during_training_steps_keeps_only_complete_epochs(stop):
    model, (x, y), recorder = tiny_model(), tiny_data(), EpochRecorder()
    stop_on_ctrl_c = keras_tools.StopOnCtrlC(initial_epoch=0)
    with pytest.raises(keras_tools.EpochInterrupted):
        model.fit(x, y, batch_size=2, epochs=5, validation_data=tiny_data(1), verbose=0,
                  callbacks=[PressStop(epoch=2, during="training", signal_number=STOPS[stop]), recorder,
                             stop_on_ctrl_c])
    # The third epoch was cut short: it was neither validated nor seen by any callback.
    assert stop_on_ctrl_c.signal_number == STOPS[stop] and stop_on_ctrl_c.completed_epochs == 2
    assert recorder.epochs == [0, 1]
    assert sorted(stop_on_ctrl_c.last_epoch_logs) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    with pytest.raises(KeyboardInterrupt):  # a second stop quits at once
        signal.raise_signal(STOPS[stop])

    # Back to the end of the second epoch, optimizer state included: 2 epochs of 8 steps.
    assert int(model.optimizer.iterations) == 2 * 8 + 3
    stop_on_ctrl_c.restore_last_epoch()
    assert all(np.array_equal(now, then) for now, then in zip(model.get_weights(), recorder.weights[-1]))
    assert int(model.optimizer.iterations) == 2 * 8


def test_a_stop_in_a_fits_first_epoch_puts_back_the_optimizer_as_before_the_fit():
    """A second fit (TransferModel's stage 2) with a new optimizer, stopped at its third step:
    the weights as before the fit, and the optimizer's variables built at its first step at
    zero, as a new optimizer's, not holding the momentum of the steps taken."""
    model, (x, y) = tiny_model(), tiny_data()
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="categorical_crossentropy", metrics=["accuracy"])
    before = model.get_weights()
    stop_on_ctrl_c = keras_tools.StopOnCtrlC(initial_epoch=3)
    keras_tools.fit_until_stopped(model, [PressStop(epoch=3, during="training"), stop_on_ctrl_c], stop_on_ctrl_c,
                                  x, y, batch_size=2, epochs=5, initial_epoch=3, verbose=0)
    assert stop_on_ctrl_c.interrupted and stop_on_ctrl_c.completed_epochs == 3
    assert all(np.array_equal(now, then) for now, then in zip(model.get_weights(), before))
    state = {variable.path: variable.numpy() for variable in model.optimizer.variables}
    assert len(state) > 2 and all(not np.any(value) for path, value in state.items() if "learning_rate" not in path)


def test_ctrl_c_during_validation_keeps_the_epoch_it_ends():
    model, (x, y), recorder = tiny_model(), tiny_data(), EpochRecorder()
    stop_on_ctrl_c = keras_tools.StopOnCtrlC(initial_epoch=0)
    history = model.fit(x, y, batch_size=2, epochs=5, validation_data=tiny_data(1), verbose=0,
                        callbacks=[PressStop(epoch=1, during="validation"), recorder, stop_on_ctrl_c])
    # The second epoch's training was complete: it is validated, logged and counted, then fit stops.
    assert stop_on_ctrl_c.interrupted and stop_on_ctrl_c.completed_epochs == 2
    assert recorder.epochs == history.epoch == [0, 1]
    assert stop_on_ctrl_c.last_epoch_logs["val_loss"] == history.history["val_loss"][-1]


def test_ctrl_c_before_the_first_epoch_ends_saves_nothing_and_says_so(tmp_path):
    model = tiny_model()
    stop_on_ctrl_c = keras_tools.StopOnCtrlC(initial_epoch=0)
    options = {"train_dir": "my photos/train", "epochs": 50, "initial_epoch": 0,
               "model_file": str(tmp_path / "model.h5"), "predict": None, "check_labels": False}
    message = keras_tools.save_interrupted_run(model, ["ant", "bee"], keras_tools.BestEpoch(), stop_on_ctrl_c,
                                               "FirstModel.py", options, str(tmp_path / "logs" / "FirstModel-1"))
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
                                               options, str(tmp_path / "SecondModel-1"))
    assert message == (f"Interrupted before the end of epoch 4; nothing new to save: {model_file} still "
                       f"holds epoch 3. To go on: python SecondModel.py --epochs 10 --initial-epoch 3 "
                       f"--model-file {model_file}")
    assert [path.name for path in tmp_path.iterdir()] == ["model.h5"]
    assert model_file.read_bytes() == b"the model saved after epoch 3"


@pytest.mark.skipif(os.name == "nt", reason="a terminal that hangs up is a POSIX matter")
def test_after_a_closed_terminal_what_is_printed_goes_nowhere_instead_of_failing(monkeypatch):
    import pty

    window, terminal = pty.openpty()
    output = open(terminal, "w", buffering=1)
    monkeypatch.setattr(sys, "stdout", output)
    monkeypatch.setattr(image_files, "_TERMINALS", {terminal})  # what the script printed to at its start
    os.close(window)  # the window closes
    with pytest.raises(OSError):
        print("Epoch 3/6", flush=True)
    image_files.after_hang_up(signal.SIGHUP)
    print("60/60 - 1s - 9ms/step - accuracy: 1.0000", flush=True)  # Keras' line, the report: no error
    output.close()


def stopped_after(epochs, model):
    """A StopOnCtrlC as fit leaves it when a stop came after `epochs` complete epochs."""
    stop_on_ctrl_c = keras_tools.StopOnCtrlC(initial_epoch=0)
    stop_on_ctrl_c.set_model(model)
    for epoch in range(epochs):
        stop_on_ctrl_c.on_epoch_end(epoch, {"loss": 0.5, "val_loss": 0.6, "val_accuracy": 0.5})
    return stop_on_ctrl_c


def test_stopped_runs_never_replace_each_others_partial_sets(tmp_path):
    model_file, model = str(tmp_path / "model.h5"), tiny_model()
    options = {"epochs": 10, "initial_epoch": 0, "model_file": model_file}
    runs = ["FirstModel-20261201-120000", "FirstModel-20261201-120000", "FirstModel-20261201-120500"]
    messages = []
    for epochs, run in enumerate(runs, start=1):  # the first two in the same second, other log folders
        messages.append(keras_tools.save_interrupted_run(model, ["ant", "bee"], keras_tools.BestEpoch(),
                                                         stopped_after(epochs, model), "FirstModel.py",
                                                         options, str(tmp_path / f"logs{epochs}" / run)))
    partial_files = [tmp_path / name for name in ("model.partial-20261201-120000.h5",
                                                  "model.partial-20261201-120000-2.h5",
                                                  "model.partial-20261201-120500.h5")]
    for epochs, (message, partial_file) in enumerate(zip(messages, partial_files), start=1):
        assert f"--initial-epoch {epochs} --model-file {partial_file}" in message
        assert saved_epoch(partial_file) == saved_epoch(str(partial_file).replace(".h5", ".last.h5")) == epochs
    assert len(list(tmp_path.glob("model.partial-*"))) == 3 * 4

    # A resumed partial run stopped again gets a set of its own, its name not growing.
    resumed = keras_tools.save_interrupted_run(
        model, ["ant", "bee"], keras_tools.BestEpoch(), stopped_after(5, model), "FirstModel.py",
        {**options, "model_file": str(partial_files[0]), "initial_epoch": 1},
        str(tmp_path / "logs1" / "FirstModel-20261201-130000"))
    assert f"--model-file {tmp_path / 'model.partial-20261201-130000.h5'}" in resumed
    assert saved_epoch(partial_files[0]) == 1


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


def writer(text, fail=False):
    def save(path):
        with open(path, "w") as file:
            file.write(text)
        if fail:
            raise OSError(28, "No space left on device")
    return save


NAMES = ["model.h5", "model.weights.h5", "model.last.h5", "model.last.weights.h5"]


def test_a_set_of_files_is_replaced_all_together_or_not_at_all(tmp_path):
    for name in NAMES:
        (tmp_path / name).write_text(f"old {name}")
    # The third file fails (a full disk): none is replaced, not even the first two, nothing is
    # left behind, and the error names the file in one line.
    with pytest.raises(image_files.DataError) as failed:
        image_files.save_files_atomically({str(tmp_path / name): writer(f"new {name}", fail=index == 2)
                                           for index, name in enumerate(NAMES)})
    assert str(failed.value).startswith(f"cannot write '{tmp_path / 'model.last.h5'}' "
                                        "(No space left on device): nothing was replaced")
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(NAMES)
    assert all((tmp_path / name).read_text() == f"old {name}" for name in NAMES)


@pytest.mark.parametrize("stop", list(STOPS))
def test_a_stop_while_saving_waits_for_the_whole_set_then_acts(stop, tmp_path):
    def stop_while_saving(path):
        signal.raise_signal(STOPS[stop])
        writer("new model.last.h5")(path)

    saves = {str(tmp_path / name): writer(f"new {name}") for name in NAMES}
    saves[str(tmp_path / "model.last.h5")] = stop_while_saving
    with pytest.raises(KeyboardInterrupt) as stopped:
        image_files.save_files_atomically(saves)
    assert image_files.signal_of(stopped.value) == STOPS[stop]  # acted on, once the set was in place
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(NAMES)
    assert all((tmp_path / name).read_text() == f"new {name}" for name in NAMES)

    # Inside a block that holds stops off (the model scripts' save and report), it is noted there.
    with image_files.stops_held_off() as held:
        image_files.save_files_atomically(saves)
    assert held == [STOPS[stop]]


def test_a_stop_while_writing_an_image_leaves_it_whole(tmp_path, monkeypatch):
    new_hidden_file = image_files._new_hidden_file

    def stop_while_writing(folder, name):
        signal.raise_signal(signal.SIGTERM)  # `kill`, as the file is being written
        return new_hidden_file(folder, name)

    monkeypatch.setattr(image_files, "_new_hidden_file", stop_while_writing)
    (tmp_path / "a_0001.jpg").write_bytes(b"taken")
    with pytest.raises(image_files.Stopped):
        image_files.save_new_file(b"a whole image", str(tmp_path), (f"a_{number:04d}.jpg" for number in range(1, 9)))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_0001.jpg", "a_0002.jpg"]  # no hidden file
    assert (tmp_path / "a_0002.jpg").read_bytes() == b"a whole image"
