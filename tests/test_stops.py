"""A stop (Ctrl-C, SIGTERM, SIGHUP) at any moment but training (that is in test_checkpoints.py): one line
saying what is saved, then the process ends by the signal, as shells expect, and nothing half-written
is left behind."""

import os
import shlex
import signal
import subprocess
import sys
import time

import keras
import pytest
from PIL import Image

import FirstModel
import photos
import reports
from helpers import (REPO, STOPS, assert_stopped_in_one_line, make_images, run_in_process, save_model,
                     start_script, stops_by_default)

POSIX_ONLY = pytest.mark.skipif(os.name == "nt", reason="shells, process groups and terminals are a POSIX matter")
SCRIPTS = ["FirstModel.py", "SecondModel.py", "SVMModel.py", "ClassImageAugmentationSample.py",
           "UnitaryImageAugmentationSample.py", "TransferModel.py"]


def hidden_files(folder):
    return [path for path in folder.rglob(".*")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    work = tmp_path_factory.mktemp("photos")
    make_images(work / "train", {"apple": 6, "berry": 6}, seed=1)
    make_images(work / "validation", {"apple": 2, "berry": 2}, seed=2)
    (work / "train" / "refImage.png").write_bytes((work / "train" / "apple" / "apple_000.png").read_bytes())
    return work


@pytest.mark.parametrize("script, delay, stop", list(zip(SCRIPTS, [0.2, 0.4, 0.6, 0.8, 1.0, 1.2], [
    "SIGINT", "SIGINT", "SIGTERM", "SIGHUP", "SIGINT", "SIGTERM"])))
def test_a_stop_in_the_first_second_is_one_line_and_ends_the_process_by_its_signal(script, delay, stop, folder):
    """While Python loads TensorFlow and the other modules, before the script's own work."""
    stop = STOPS.get(stop, signal.SIGTERM)  # no SIGHUP on Windows
    arguments = ["--image", "train/refImage.png"] if script == "UnitaryImageAugmentationSample.py" else [
        "--train-dir", "train", "--validation-dir", "validation"]
    process = start_script(script, *arguments, "--log-dir", "logs", cwd=folder)
    time.sleep(delay)
    process.send_signal(stop)
    stdout, stderr = process.communicate(timeout=300)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    name = "Ctrl-C" if stop == signal.SIGINT else signal.Signals(stop).name
    assert_stopped_in_one_line(result, stop, f"{script}: interrupted ({name}); ")
    if os.name != "nt":
        assert result.returncode == -stop  # ended by the signal: a shell shows 128 + its number
    assert not (folder / "logs").exists()


@POSIX_ONLY
def test_a_loop_of_runs_in_a_shell_stops_with_the_run_ctrl_c_stopped(folder):
    """Ctrl-C reaches the shell and the script it runs. A shell goes on with its loop after a
    program that exits of its own accord, and stops when the program ended by the signal."""
    run = f"{shlex.quote(sys.executable)} {shlex.quote(str(REPO / 'SVMModel.py'))} --train-dir train " \
          "--validation-dir validation --log-dir logs --seed"
    loop = subprocess.Popen(["bash", "-c", f"for seed in 1 2; do {run} $seed; done; echo the loop went on"],
                            cwd=folder, env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True,
                            preexec_fn=stops_by_default, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # as TensorFlow loads
    os.killpg(loop.pid, signal.SIGINT)  # as a terminal sends Ctrl-C: to its whole foreground group
    stdout, stderr = loop.communicate(timeout=300)
    assert "the loop went on" not in stdout and loop.returncode == -signal.SIGINT, (stdout, stderr)
    assert stderr.strip() == "SVMModel.py: interrupted (Ctrl-C); nothing saved"


@POSIX_ONLY
def test_a_closed_terminal_ends_a_script_by_its_hang_up(folder):
    """The window closes as TensorFlow loads: the script's line cannot be shown on it, and the
    script ends by SIGHUP."""
    import pty

    pid, terminal = pty.fork()
    if pid == 0:  # the script, in its terminal
        try:
            os.chdir(folder)
            os.execv(sys.executable, [sys.executable, str(REPO / "SVMModel.py"), "--train-dir", "train",
                                      "--validation-dir", "validation", "--log-dir", "logs"])
        finally:
            os._exit(1)
    time.sleep(1.0)
    os.close(terminal)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == -signal.SIGHUP


@pytest.mark.parametrize("script", ["FirstModel.py", "SVMModel.py"])
def test_ctrl_c_while_a_model_script_reads_photos_is_one_line(script, folder, monkeypatch):
    read_image, reads = photos.read_image, []

    def ctrl_c_on_the_fifth(path, image_size):
        reads.append(path)
        if len(reads) == 5:
            signal.raise_signal(signal.SIGINT)
        return read_image(path, image_size)

    monkeypatch.setattr(photos, "read_image", ctrl_c_on_the_fifth)
    result = run_in_process(script, "--train-dir", "train", "--validation-dir", "validation", "--log-dir", "logs",
                            "--model-file", f"model{'.joblib' if script == 'SVMModel.py' else '.h5'}", cwd=folder)
    assert_stopped_in_one_line(result, signal.SIGINT, f"{script}: interrupted (Ctrl-C); nothing saved")
    assert "Read " not in result.stdout and not (folder / "logs").exists()


def test_ctrl_c_during_check_labels_is_one_line(folder, monkeypatch):
    fit, calls = keras.Model.fit, []

    def ctrl_c_in_the_second_fold(model, *args, **options):
        calls.append(model)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)
        return fit(model, *args, **options)

    monkeypatch.setattr(keras.Model, "fit", ctrl_c_in_the_second_fold)
    result = run_in_process("SecondModel.py", "--check-labels", "--train-dir", "train", "--image-size", 32,
                            "--batch-size", 4, cwd=folder)
    assert_stopped_in_one_line(result, signal.SIGINT, "SecondModel.py: interrupted (Ctrl-C); nothing saved")
    assert "Fold 1 of 5 done" in result.stdout and "Fold 2" not in result.stdout


def test_a_stop_during_predict_is_one_line(folder, tmp_path, monkeypatch):
    model_file = tmp_path / "model.h5"
    save_model(FirstModel.build_model(32, 2), model_file, ["apple", "berry"], 1)
    read_images = photos.read_images

    def stopped_while_reading(paths, image_size):
        signal.raise_signal(signal.SIGTERM)  # `kill` while the photos are read
        return read_images(paths, image_size)

    monkeypatch.setattr(photos, "read_images", stopped_while_reading)
    result = run_in_process("FirstModel.py", "--predict", folder / "validation", "--model-file", model_file,
                            cwd=tmp_path)
    assert_stopped_in_one_line(result, signal.SIGTERM, "FirstModel.py: interrupted (SIGTERM); nothing saved")
    assert result.stdout == ""


def test_a_stop_after_the_last_epoch_leaves_the_same_command_its_model_to_save(small_dataset, tmp_path, monkeypatch):
    """Ctrl-C while the report of the model kept is made, before its files are written: the same
    command trains no more and saves them."""
    describe = reports.ValidationReport.describe

    def ctrl_c_during_the_report(self, *args):
        signal.raise_signal(signal.SIGINT)
        return describe(self, *args)

    monkeypatch.setattr(reports.ValidationReport, "describe", ctrl_c_during_the_report)
    train_dir, validation_dir = small_dataset
    arguments = ["--train-dir", train_dir, "--validation-dir", validation_dir, "--epochs", 2, "--batch-size", 4,
                 "--image-size", 32, "--log-dir", tmp_path / "logs", "--model-file", tmp_path / "model.h5"]
    result = run_in_process("FirstModel.py", *arguments, cwd=tmp_path)
    assert_stopped_in_one_line(result, signal.SIGINT, "interrupted (Ctrl-C); the run is saved after epoch 2 in "
                                                      f"{tmp_path / 'model.checkpoint.h5'}: the same command "
                                                      "saves its model")
    monkeypatch.undo()
    finished = run_in_process("FirstModel.py", *arguments, cwd=tmp_path)
    assert finished.returncode == 0 and "Epoch " not in finished.stdout, finished.stderr
    assert sorted(path.name for path in tmp_path.glob("model*")) == [
        "model.h5", "model.last.h5", "model.last.weights.h5", "model.weights.h5"]
    predicted = run_in_process("FirstModel.py", "--predict", validation_dir, "--model-file", tmp_path / "model.h5",
                               cwd=tmp_path)
    assert predicted.returncode == 0 and len(predicted.stdout.splitlines()) == 8


def stop_while_writing_the_nth_image(monkeypatch, n, signal_number):
    """The stop comes as the nth image the script saves is created, empty, before its data is written."""
    created = []

    def open_then_stop(path, mode="r", *args, **kwargs):
        new_file = open(path, mode, *args, **kwargs)
        if mode == "xb":
            created.append(path)
            if len(created) == n:
                signal.raise_signal(signal_number)
        return new_file

    monkeypatch.setattr(photos, "open", open_then_stop, raising=False)


@pytest.fixture
def balancer_arguments(tmp_path):
    train_dir = make_images(tmp_path / "train", {"apple": 3, "berry": 2})
    validation_dir = make_images(tmp_path / "validation", {"apple": 1, "berry": 1})
    return ["--train-dir", train_dir, "--validation-dir", validation_dir, "--output-dir", tmp_path / "generated",
            "--train-target", 60, "--validation-target", 5]


def check_balanced_output(arguments, tmp_path):
    """Every image a rerun counts opens, no temporary file is left, and the rerun ends on the
    targets, keeping what the stopped run wrote."""
    output_dir = tmp_path / "generated"
    counted = {path: path.read_bytes() for path in output_dir.rglob("*")
               if path.is_file() and not path.name.startswith(".")}
    for path in counted:
        with Image.open(path) as image:
            image.load()
    assert hidden_files(output_dir) == []
    assert 60 < len(counted) < 120 + 10

    rerun = run_in_process("ClassImageAugmentationSample.py", *arguments, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    for split, target in (("train", 60), ("validation", 5)):
        for class_name in ("apple", "berry"):
            assert len(photos.list_images(output_dir / split / class_name)) == target
    assert all(path.read_bytes() == data for path, data in counted.items())


def test_ctrl_c_half_way_through_writing_an_image_leaves_it_whole(balancer_arguments, tmp_path, monkeypatch):
    stop_while_writing_the_nth_image(monkeypatch, 70, signal.SIGINT)
    result = run_in_process("ClassImageAugmentationSample.py", *balancer_arguments, cwd=tmp_path)
    assert_stopped_in_one_line(result, signal.SIGINT, "interrupted (Ctrl-C); the images written so far are complete")
    monkeypatch.undo()
    check_balanced_output(balancer_arguments, tmp_path)


def test_a_stopped_unitary_sample_leaves_only_whole_copies(tmp_path, monkeypatch):
    make_images(tmp_path / "in", {"cat": 1}, size=(300, 200))
    stop_while_writing_the_nth_image(monkeypatch, 4, signal.SIGINT)
    result = run_in_process("UnitaryImageAugmentationSample.py", "--image", tmp_path / "in" / "cat" / "cat_000.png",
                            "--output-dir", tmp_path / "out", "--log-dir", tmp_path / "logs", cwd=tmp_path)
    assert_stopped_in_one_line(result, signal.SIGINT, "interrupted (Ctrl-C); the copies written so far are complete")
    # The fourth copy, being written when the stop came, is there whole, and nothing else.
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [f"MY_CLASS_{n:04d}.jpg" for n in (1, 2, 3, 4)]
    for path in (tmp_path / "out").iterdir():
        with Image.open(path) as image:
            image.load()
