"""Runs stopped as users stop them, Ctrl-C in the terminal, `kill`, `docker stop`, a closed
window: complete epochs saved in a partial set of the run's own, the shell's exit status, and a
printed command that goes on."""

import concurrent.futures
import json
import os
import signal
import sys
import threading

import h5py
import keras

import keras_tools
from helpers import (REPO, STOPS, check_partial_set, logged_scalars, make_images, run_in_process, saved_epoch,
                     set_mark, start_script, stderr_lines, stop_at_line)


def run_closing_its_terminal(command, cwd, at):
    """Run command in a terminal of its own (a pty), and close the terminal, as a user closes the
    window, when it shows `at`: the exit status."""
    import pty

    pid, terminal = pty.fork()
    if pid == 0:  # the script, in its terminal
        try:
            os.chdir(cwd)
            os.execv(command[0], command)
        finally:
            os._exit(1)
    watchdog = threading.Timer(600, os.kill, (pid, signal.SIGKILL))  # never wait for ever
    watchdog.start()
    try:
        shown = b""
        while at not in shown:
            shown += os.read(terminal, 4096)
        os.close(terminal)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    finally:
        watchdog.cancel()


def test_runs_stopped_side_by_side_keep_their_epochs_and_the_printed_command_finishes_one(tmp_path):
    """Three runs saving to one --model-file at once, in folders with spaces and with flags unlike
    the defaults: one stopped by Ctrl-C, one by `kill` (SIGTERM), one by closing its terminal
    window (SIGHUP, after which every write to the terminal fails). Each keeps its complete epochs
    in a set of its own, with the status a shell expects; the printed command finishes a run."""
    photos = tmp_path / "my photos"
    train_dir = make_images(photos / "train", {"apple": 12, "berry": 12}, seed=1)
    validation_dir = make_images(photos / "validation", {"apple": 3, "berry": 3}, seed=2)
    model_file = tmp_path / "model.h5"
    model_file.write_bytes(b"the model saved by an earlier run")
    arguments = ["--train-dir", train_dir, "--validation-dir", validation_dir, "--image-size", 24, "--epochs", 5,
                 "--log-dir", tmp_path / "my logs", "--model-file", model_file]
    runs = {stop: start_script("FirstModel.py", *arguments, "--seed", seed, cwd=tmp_path)
            for seed, stop in enumerate(["SIGINT", "SIGTERM"], start=1)}
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as watchers:  # each stopped in its third epoch
        stopped = {stop: watchers.submit(stop_at_line, process, "Epoch 3/", STOPS[stop])
                   for stop, process in runs.items()}
        if "SIGHUP" in STOPS:  # a terminal that hangs up is a POSIX matter
            hung_up = watchers.submit(run_closing_its_terminal, [
                sys.executable, str(REPO / "FirstModel.py"), *map(str, arguments), "--seed", "3"], tmp_path, b"Epoch 3/")
    commands = {stop: check_partial_set(future.result(), stop, model_file) for stop, future in stopped.items()}
    if "SIGHUP" in STOPS:
        assert hung_up.result() == 128 + signal.SIGHUP
    last_files = sorted(tmp_path.glob("model.partial-*.last.h5"))
    assert len(last_files) == len(STOPS)  # a set each, none replacing another
    for last_file in last_files:
        assert set_mark(str(last_file).replace(".last.h5", ".h5")) == set_mark(last_file) is not None
        assert saved_epoch(last_file) >= 2
    assert model_file.read_bytes() == b"the model saved by an earlier run"

    # The Ctrl-C'd run's command goes on with the same folders and image size, up to the same epoch.
    command, partial_file, completed = commands["SIGINT"]
    assert command[:2] == ["python", str(REPO / "FirstModel.py")]  # the script as it was started
    assert command[command.index("--train-dir") + 1] == str(train_dir)
    assert command[command.index("--image-size") + 1] == "24"
    [first_run] = (tmp_path / "my logs").glob("FirstModel-" + partial_file.name.split("partial-")[1][:-3])
    assert sorted(logged_scalars(first_run / "validation")["epoch_loss"]) == list(range(completed))
    runs_before = set((tmp_path / "my logs").iterdir())
    resumed = run_in_process("FirstModel.py", *command[2:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert stderr_lines(resumed) == []
    assert f"Resuming {partial_file} after epoch {completed}" in resumed.stdout
    assert saved_epoch(str(partial_file).replace(".h5", ".last.h5")) == 5
    [second_run] = set((tmp_path / "my logs").iterdir()) - runs_before
    assert sorted(logged_scalars(second_run / "validation")["epoch_loss"]) == list(range(completed, 5))
    with h5py.File(partial_file, "r") as saved_model:
        assert json.loads(saved_model.attrs["class_names"]) == ["apple", "berry"]
    assert keras.models.load_model(partial_file).input_shape == (None, 24, 24, 3)
    # The finished model is in the partial file: the run says so, with the --predict that uses it.
    assert f"Kept in {partial_file}: epoch " in resumed.stdout
    assert (f"To classify photos with it: python {REPO / 'FirstModel.py'} --predict PHOTOS "
            f"--model-file {partial_file}") in resumed.stdout


def test_a_stop_after_the_last_epoch_keeps_the_finished_run(small_dataset, tmp_path, monkeypatch):
    """Ctrl-C once the last epoch has trained, while the report of the model is made (as while
    it is validated, the same branch): the run is saved whole, as if not stopped, and ends with
    Ctrl-C's status; --predict takes the model."""
    train_dir, validation_dir = small_dataset
    report_of_the_model = keras_tools.ValidationReport.on_train_end

    def stop_during_the_report(self, logs=None):
        signal.raise_signal(signal.SIGINT)
        report_of_the_model(self, logs)

    monkeypatch.setattr(keras_tools.ValidationReport, "on_train_end", stop_during_the_report)
    model_file = tmp_path / "model.h5"
    result = run_in_process("FirstModel.py", "--train-dir", train_dir, "--validation-dir", validation_dir,
                            "--epochs", 2, "--batch-size", 2, "--image-size", 32, "--log-dir", tmp_path / "logs",
                            "--model-file", model_file, cwd=tmp_path)
    assert result.returncode == 130
    assert stderr_lines(result) == ["Stopped after the last epoch; the run is saved whole, as said above."]
    assert saved_epoch(tmp_path / "model.last.h5") == 2
    assert "Misclassified validation images" in result.stdout and not list(tmp_path.glob("*partial*"))
    predicted = run_in_process("FirstModel.py", "--predict", validation_dir, "--model-file", model_file,
                               cwd=tmp_path)
    assert predicted.returncode == 0 and len(predicted.stdout.splitlines()) == 8
