"""Runs stopped as users stop them, Ctrl-C in the terminal, `kill`, `docker stop`, a closed
window: complete epochs saved in a partial set of the run's own, the shell's exit status, and a
printed command that goes on."""

import json
import signal

import h5py
import keras

import keras_tools
from helpers import (REPO, STOPS, check_partial_set, logged_scalars, make_images, run_in_process, saved_epoch,
                     start_script, stderr_lines, stop_at_line)



def stopped_run(script, stop, tmp_path, model_file, at="Epoch 3/"):
    """script started on a small set in folders with spaces, with flags that differ from the
    defaults, stopped by signal `stop` when it prints `at`: (result, train_dir)."""
    photos = tmp_path / "my photos"
    train_dir = make_images(photos / "train", {"apple": 12, "berry": 12}, seed=1)
    validation_dir = make_images(photos / "validation", {"apple": 3, "berry": 3}, seed=2)
    process = start_script(script, "--train-dir", train_dir, "--validation-dir", validation_dir,
                           "--image-size", 24, "--batch-size", 1, "--epochs", 6,
                           "--log-dir", tmp_path / "my logs", "--model-file", model_file, cwd=tmp_path)
    return stop_at_line(process, at, STOPS[stop]), train_dir


def test_ctrl_c_then_the_printed_command_finishes_the_run(tmp_path):
    script, stop = "FirstModel.py", "SIGINT"
    model_file = tmp_path / "model.h5"
    model_file.write_bytes(b"the model saved by an earlier run")
    result, train_dir = stopped_run(script, stop, tmp_path, model_file)
    command, partial_file, completed = check_partial_set(result, stop, model_file)
    [first_run] = (tmp_path / "my logs").iterdir()
    assert sorted(logged_scalars(first_run / "validation")["epoch_loss"]) == list(range(completed))
    assert model_file.read_bytes() == b"the model saved by an earlier run"

    # The command printed goes on with the same folders and image size, up to the same epoch.
    assert command[:2] == ["python", str(REPO / script)]  # the script as it was started
    assert command[command.index("--train-dir") + 1] == str(train_dir)
    assert command[command.index("--image-size") + 1] == "24"
    resumed = run_in_process(script, *command[2:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert stderr_lines(resumed) == []
    assert f"Resuming {partial_file} after epoch {completed}" in resumed.stdout
    assert saved_epoch(str(partial_file).replace(".h5", ".last.h5")) == 6
    second_run = next(run for run in (tmp_path / "my logs").iterdir() if run != first_run)
    assert sorted(logged_scalars(second_run / "validation")["epoch_loss"]) == list(range(completed, 6))
    with h5py.File(partial_file, "r") as saved_model:
        assert json.loads(saved_model.attrs["class_names"]) == ["apple", "berry"]
    assert keras.models.load_model(partial_file).input_shape == (None, 24, 24, 3)
    # The finished model is in the partial file: the run says so, with the --predict that uses it.
    assert f"Kept in {partial_file}: epoch " in resumed.stdout
    assert (f"To classify photos with it: python {REPO / script} --predict PHOTOS "
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
