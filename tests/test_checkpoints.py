"""Every complete epoch on disk: runs killed at random moments (kill -9, as the OOM killer or a power
cut ends them) go on when the same command runs again, from the last complete epoch or the one
before if the kill struck its save; a second run on the same model file is refused; a checkpoint
made with other settings is never resumed; and a finished run leaves nothing temporary. TransferModel's
run also shows what its stage 2 trains."""

import concurrent.futures
import json
import os
import random
import re
import signal
import threading

import h5py
import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import reports
import runs
import training
from helpers import (MOBILENET_WEIGHTS, assert_one_line_error, assert_stopped_in_one_line, logged_scalars, make_images,
                     optimizer_iterations, run_in_process, saved_epoch, start_script, stderr_lines)

EPOCH_LINE = re.compile(r"\d+/\d+ - .* val_loss: ")  # Keras prints it once the epoch is saved
MODEL_FILES = sorted(["model.h5", "model.weights.h5", "model.last.h5", "model.last.weights.h5"])


def kill_at_random(process, after_line, seconds, lines_seen):
    """kill -9 a started script at a random moment within seconds after it prints a line starting with
    after_line, having printed nothing on stderr; its output until then, and the delay, for the assertions."""
    watchdog = threading.Timer(600, process.kill)  # never wait for ever on a script that hangs
    watchdog.start()
    try:
        for line in process.stdout:
            lines_seen.append(line)
            if line.startswith(after_line):
                break
        delay = random.uniform(0, seconds)
        threading.Timer(delay, process.kill).start()  # SIGKILL: no handler runs, nothing is flushed
        rest, stderr = process.communicate(timeout=600)
    finally:
        watchdog.cancel()
    # Nothing on stderr until then, not even TensorFlow's start-up lines: nothing for the user to puzzle over.
    assert stderr == "", stderr
    return "".join(lines_seen) + rest, delay


def went_on_from(killed_output, delay, resumed_output):
    """The run going on names the epoch it goes on from: the last one the killed run completed, or
    the one after if the kill came after its save and before Keras printed it. Returns that epoch."""
    started = completed = 0
    for line in killed_output.splitlines():
        if line.startswith("Epoch "):
            started = int(line.split()[1].split("/")[0])
        elif EPOCH_LINE.match(line):
            completed = started
    went_on = int(re.search(r"Going on from epoch (\d+) of an unfinished run", resumed_output).group(1))
    assert completed <= went_on <= min(completed + 1, started), (completed, went_on, started, delay)
    epochs = re.findall(r"^Epoch (\d+)/", resumed_output, re.MULTILINE)
    assert not epochs or int(epochs[0]) == went_on + 1, (went_on, epochs)
    return went_on


def check_finished(folder, epochs, log_dir):
    """A finished run: its model files, nothing temporary beside them, and one TensorBoard run with
    every epoch, the killed run's and the rest."""
    assert sorted(path.name for path in folder.glob("model*")) == MODEL_FILES
    assert [path.name for path in folder.glob(".*")] == []
    assert saved_epoch(folder / "model.last.h5") == epochs
    [run] = log_dir.iterdir()
    assert sorted(logged_scalars(run / "validation")["epoch_loss"]) == list(range(epochs))


@pytest.fixture
def colours(tmp_path):
    """Three colours, in folders for each script, so that the runs save side by side."""
    counts = {"apple": 12, "berry": 12, "cherry": 12}
    for script in ("FirstModel", "SecondModel", "TransferModel"):
        make_images(tmp_path / script / "train", counts, seed=1)
        make_images(tmp_path / script / "validation", {name: 4 for name in counts}, seed=2)
    return tmp_path


def test_runs_killed_at_random_moments_go_on_with_the_same_command(colours, keras_home):
    """FirstModel, SecondModel and TransferModel killed at random moments, TransferModel in each of
    its stages; a second run of the same model file refused while the first trains; then the same
    command finishes each."""
    weights = keras_home / "models" / MOBILENET_WEIGHTS
    commands = {script: [f"{script}.py", "--train-dir", "train", "--validation-dir", "validation", "--image-size", 32,
                         "--log-dir", "logs", "--model-file", "model.h5"] for script in ("FirstModel", "SecondModel")}
    commands["FirstModel"] += ["--batch-size", 1, "--epochs", 8]  # more epochs than a kill window covers
    commands["SecondModel"] += ["--batch-size", 2, "--epochs", 12]
    # Stage 1: epochs 1 to 30, on the features; stage 2: 31 to 33.
    commands["TransferModel"] = ["TransferModel.py", "--train-dir", "train", "--validation-dir", "validation",
                                 "--image-size", 32, "--batch-size", 8, "--epochs", 33, "--weights", weights,
                                 "--log-dir", "logs", "--model-file", "model.h5"]
    kills = {"FirstModel": ("Epoch 2/", 1.5), "SecondModel": ("Epoch 3/", 0.6), "TransferModel": ("Epoch 3/", 0.4)}
    processes = {script: start_script(*command, cwd=colours / script) for script, command in commands.items()}
    seen = {script: [] for script in processes}
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as watchers:
        killed = {script: watchers.submit(kill_at_random, process, *kills[script], seen[script])
                  for script, process in processes.items()}
        while not any(line.startswith("Epoch 1/") for line in seen["FirstModel"]):
            threading.Event().wait(0.1)
        refused = run_in_process(*commands["FirstModel"], cwd=colours / "FirstModel")  # the same, at once
        killed = {script: future.result() for script, future in killed.items()}
    assert_one_line_error(refused, "FirstModel.py: error: another run is training 'model.h5' (it holds "
                                   "'model.h5.lock'): wait for it to end, or choose another --model-file")
    assert "Epoch" not in refused.stdout

    # TransferModel, killed in stage 1, is killed in stage 2 as the same command goes on, then finishes.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as watcher:
        killed_again = watcher.submit(kill_at_random, start_script(*commands["TransferModel"], cwd=colours /
                                                                   "TransferModel"), "Epoch 32/", 0.4, [])
        for script in ("FirstModel", "SecondModel"):  # meanwhile, the same commands finish the others
            folder = colours / script
            assert [path.name for path in folder.glob("model*.h5")] == ["model.checkpoint.h5"]
            resumed = run_in_process(*commands[script], cwd=folder)
            assert resumed.returncode == 0 and stderr_lines(resumed) == [], resumed.stderr
            went_on_from(*killed[script], resumed.stdout)
            check_finished(folder, 8 if script == "FirstModel" else 12, folder / "logs")
            assert float(re.search(r"val_accuracy: (\d\.\d+)$", resumed.stdout).group(1)) > 0.5  # chance: a third
            predicted = run_in_process(f"{script}.py", "--predict", "validation", "--model-file", "model.h5",
                                       cwd=folder)
            assert predicted.returncode == 0 and len(predicted.stdout.splitlines()) == 12
        output, delay = killed_again.result()
    folder = colours / "TransferModel"
    assert "features of 48 images" in output  # computed again: stage 1 went on
    assert went_on_from(*killed["TransferModel"], output) < 30
    resumed = run_in_process(*commands["TransferModel"], cwd=folder)
    assert resumed.returncode == 0 and stderr_lines(resumed) == [], resumed.stderr
    assert went_on_from(output, delay, resumed.stdout) in (31, 32) and "features of" not in resumed.stdout
    check_finished(folder, 33, folder / "logs")
    assert optimizer_iterations(folder / "model.last.h5") == 3 * 5  # stage 2's went on: 3 epochs of 5 steps
    assert float(re.search(r"val_accuracy: (\d\.\d+)$", resumed.stdout).group(1)) > 0.5

    # Stage 2 trained the last block's convolutions; nothing else, not even its batch normalisation's statistics.
    started = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=str(weights))
    trained = keras.models.load_model(folder / "model.last.h5").get_layer("base")
    changed = {layer.name for layer, before in zip(trained.layers, started.layers)
               if any(not np.array_equal(now, then) for now, then in zip(layer.get_weights(), before.get_weights()))}
    assert changed == {"block_16_expand", "block_16_depthwise", "block_16_project", "Conv_1"}
    # Its TensorBoard run, across the three processes: its settings and pictures.
    [run] = (folder / "logs").iterdir()
    events = EventAccumulator(str(run), size_guidance={"tensors": 0})
    events.Reload()
    assert {"_hparams_/session_start_info", "augmented_training_images", "confusion_matrix",
            "misclassified_validation_images", "classification_report"} <= set(events.Tags()["tensors"])
    assert b"block_16_expand" in events.SummaryMetadata("_hparams_/session_start_info").plugin_data.content


def checkpoint_epoch(path):
    with h5py.File(path, "r") as saved:
        return json.loads(saved.attrs["run"])["epoch"]


def test_a_kill_while_an_epoch_is_saved_goes_on_from_the_epoch_before(small_dataset, tmp_path, monkeypatch):
    """The power is cut as the third epoch's state is being written: half a file under the hidden
    name, the second epoch's checkpoint whole under its own; the same command goes on from it."""
    save, saves = training.Checkpoint._save, []

    def power_cut_in_the_third(checkpoint, path):
        saves.append(path)
        if len(saves) == 3:
            with open(path, "wb") as half:
                half.write(b"\x89HDF\r\n\x1a\n half a file")
            monkeypatch.setattr(os, "unlink", lambda path: None)  # a process that is dead removes nothing
            raise SystemExit("the power is cut")
        return save(checkpoint, path)

    train_dir, validation_dir = small_dataset
    arguments = ["--train-dir", train_dir, "--validation-dir", validation_dir, "--image-size", 32, "--batch-size", 4,
                 "--epochs", 4, "--log-dir", tmp_path / "logs", "--model-file", tmp_path / "model.h5"]
    monkeypatch.setattr(training.Checkpoint, "_save", power_cut_in_the_third)
    cut = run_in_process("SecondModel.py", *arguments, cwd=tmp_path)
    monkeypatch.undo()
    assert "Epoch 3/4" in cut.stdout and "Epoch 4/4" not in cut.stdout
    assert [path.name for path in tmp_path.glob(".*")] == [".partial.model.checkpoint.h5"]
    assert (tmp_path / "model.h5.lock").exists()
    assert checkpoint_epoch(tmp_path / "model.checkpoint.h5") == 2

    resumed = run_in_process("SecondModel.py", *arguments, cwd=tmp_path)
    assert resumed.returncode == 0 and stderr_lines(resumed) == [], resumed.stderr
    assert "Going on from epoch 2 of an unfinished run" in resumed.stdout and "Epoch 3/4" in resumed.stdout
    check_finished(tmp_path, 4, tmp_path / "logs")


def test_a_kill_while_the_model_files_are_saved_is_finished_by_the_same_command(small_dataset, tmp_path, monkeypatch):
    """The power is cut between the renames of the four model files: the checkpoint, removed only
    once they are all in place, says the run is not finished, and the same command finishes it."""
    replace, renamed = os.replace, []

    def power_cut_after_two(source, destination):
        if destination.endswith(".h5") and "checkpoint" not in destination:
            if len(renamed) == 2:
                monkeypatch.setattr(os, "unlink", lambda path: None)  # a process that is dead removes nothing
                raise SystemExit("the power is cut")
            renamed.append(destination)
        replace(source, destination)

    train_dir, validation_dir = small_dataset
    arguments = ["--train-dir", train_dir, "--validation-dir", validation_dir, "--image-size", 32, "--batch-size", 4,
                 "--epochs", 3, "--log-dir", tmp_path / "logs", "--model-file", tmp_path / "model.h5"]
    monkeypatch.setattr(os, "replace", power_cut_after_two)
    run_in_process("FirstModel.py", *arguments, cwd=tmp_path)
    monkeypatch.undo()
    assert sorted(path.name for path in tmp_path.glob("model*.h5")) == [
        "model.checkpoint.h5", "model.h5", "model.weights.h5"]
    assert sorted(path.name for path in tmp_path.glob(".*")) == [".partial.model.last.h5",
                                                                 ".partial.model.last.weights.h5"]

    finished = run_in_process("FirstModel.py", *arguments, cwd=tmp_path)
    assert finished.returncode == 0 and stderr_lines(finished) == [], finished.stderr
    assert "Going on from epoch 3 of an unfinished run" in finished.stdout and "Epoch " not in finished.stdout
    check_finished(tmp_path, 3, tmp_path / "logs")
    assert "Misclassified validation images" in finished.stdout


def test_a_stopped_run_goes_on_only_with_its_own_settings(small_dataset, tmp_path, monkeypatch):
    """Ctrl-C in the second epoch: one line saying what is saved and where the same command goes on.
    Other flags, constants or classes are refused in one line saying what differs, the checkpoint
    untouched; --restart keeps it aside and starts again."""
    epoch_end = reports.ValidationReport.on_epoch_end

    def ctrl_c_as_the_second_epoch_ends(self, epoch, logs=None):  # before its state is saved
        epoch_end(self, epoch, logs)
        if epoch == 1:
            signal.raise_signal(signal.SIGINT)

    train_dir, validation_dir = small_dataset
    model_file = tmp_path / "model.h5"
    arguments = ["--train-dir", train_dir, "--validation-dir", validation_dir, "--image-size", 32, "--batch-size", 4,
                 "--epochs", 3, "--log-dir", tmp_path / "logs", "--model-file", model_file]
    monkeypatch.setattr(reports.ValidationReport, "on_epoch_end", ctrl_c_as_the_second_epoch_ends)
    stopped = run_in_process("FirstModel.py", *arguments, cwd=tmp_path)
    monkeypatch.undo()
    checkpoint = tmp_path / "model.checkpoint.h5"
    assert_stopped_in_one_line(stopped, signal.SIGINT, f"FirstModel.py: interrupted (Ctrl-C); the run is saved after "
                                                       f"epoch 1 in {checkpoint}: the same command goes on at epoch 2")
    saved = checkpoint.read_bytes()

    refused = run_in_process("FirstModel.py", *arguments[:-5], 4, *arguments[-4:], cwd=tmp_path)
    assert_one_line_error(refused, f"'{checkpoint}' holds an unfinished run started with other settings (epochs 3 "
                                   "then, 4 now): run the command it was started with to go on, or add --restart")
    with pytest.raises(runs.DataError, match=r"\(learning_rate 1.0 then, 0.5 now\)"):  # main() as the script calls it
        run_in_process("FirstModel.py", *arguments, cwd=tmp_path, constants={"LEARNING_RATE": 0.5})
    refused = run_in_process("SecondModel.py", *arguments, cwd=tmp_path)
    assert_one_line_error(refused, f"'{checkpoint}' holds an unfinished run of FirstModel.py: go on with python "
                                   "FirstModel.py and the command it was started with, or add --restart")
    for folder in (train_dir, validation_dir):
        (folder / "berry").rename(folder / "cherry")
    refused = run_in_process("FirstModel.py", *arguments, cwd=tmp_path)
    assert_one_line_error(refused, "(classes 'apple, berry' then, 'apple, cherry' now)")
    assert checkpoint.read_bytes() == saved and "Epoch" not in refused.stdout

    restarted = run_in_process("FirstModel.py", *arguments, "--restart", cwd=tmp_path)
    assert restarted.returncode == 0 and stderr_lines(restarted) == [], restarted.stderr
    [aside] = tmp_path.glob("model.checkpoint-*.h5")
    assert f"Starting again; the unfinished run is kept aside as {aside}" in restarted.stdout
    assert "Epoch 1/3" in restarted.stdout and aside.read_bytes() == saved
    assert not checkpoint.exists() and saved_epoch(tmp_path / "model.last.h5") == 3

    # --initial-epoch: a finished model goes on only in the script that made it (test_second_model.py: its classes).
    refused = run_in_process("TransferModel.py", *arguments[:-5], 4, "--initial-epoch", 3, *arguments[-4:],
                             cwd=tmp_path)
    assert_one_line_error(refused, f"cannot resume '{tmp_path / 'model.last.h5'}': it was made by FirstModel.py, not "
                                   "TransferModel.py; resume it with python FirstModel.py")
    assert saved_epoch(tmp_path / "model.last.h5") == 3 and "Epoch" not in refused.stdout


def test_a_stop_between_transfer_models_stages_keeps_stage_1_and_the_same_command_goes_on(keras_home, small_dataset,
                                                                                           tmp_path, monkeypatch):
    """SIGTERM after stage 1's last epoch, as stage 2 is set up: one line, the 30 epochs and the classifier's
    optimizer state kept, and the same command starts stage 2 at once."""
    training_batches = training.training_batches

    def sigterm_at_the_seam(*args, **kwargs):  # stage 2's batches are made first thing
        signal.raise_signal(signal.SIGTERM)
        return training_batches(*args, **kwargs)

    train_dir, validation_dir = small_dataset
    arguments = ["TransferModel.py", "--train-dir", train_dir, "--validation-dir", validation_dir, "--image-size", 32,
                 "--batch-size", 4, "--epochs", 31, "--weights", keras_home / "models" / MOBILENET_WEIGHTS,
                 "--log-dir", tmp_path / "logs", "--model-file", tmp_path / "model.h5"]
    monkeypatch.setattr(training, "training_batches", sigterm_at_the_seam)
    stopped = run_in_process(*arguments, cwd=tmp_path)
    checkpoint = tmp_path / "model.checkpoint.h5"
    line = (f"TransferModel.py: interrupted (SIGTERM); the run is saved after epoch 30 in {checkpoint}: the same "
            "command goes on at epoch 31")
    assert_stopped_in_one_line(stopped, signal.SIGTERM, line)
    with h5py.File(checkpoint, "r") as saved:
        assert json.loads(saved.attrs["run"])["trained"] == "classifier" and len(saved["optimizer"]) > 0
    # The same command goes straight to stage 2 (stopped again as it starts: tracing stage 2 would take 10 s here;
    # test_runs_killed_at_random_moments trains it).
    resumed = run_in_process(*arguments, cwd=tmp_path)
    assert_stopped_in_one_line(resumed, signal.SIGTERM, line)
    assert "Going on from epoch 30 of an unfinished run" in resumed.stdout and "features of" not in resumed.stdout
