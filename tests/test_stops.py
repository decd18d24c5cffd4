"""A stop at any other moment than training (Ctrl-C, SIGTERM): one line, no traceback, the
shell's status, and nothing half-written left behind."""

import _thread
import signal
import subprocess
import threading
import time

import keras
import numpy as np
import pytest
from PIL import Image

import FirstModel
import image_files
import keras_tools
from helpers import make_images, run_in_process, start_script, stderr_lines, stop_at_line

SCRIPTS = ["FirstModel.py", "SecondModel.py", "SVMModel.py", "ClassImageAugmentationSample.py",
           "UnitaryImageAugmentationSample.py", "TransferModel.py"]


def assert_stopped_in_one_line(result, signal_number, *expected_parts):
    assert result.returncode == 128 + signal_number, (result.returncode, result.stderr)
    lines = stderr_lines(result)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for part in expected_parts:
        assert part in lines[0]


def hidden_files(folder):
    return [path for path in folder.rglob(".*")]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    work = tmp_path_factory.mktemp("photos")
    make_images(work / "train", {"apple": 6, "berry": 6}, seed=1)
    make_images(work / "validation", {"apple": 2, "berry": 2}, seed=2)
    (work / "train" / "refImage.png").write_bytes((work / "train" / "apple" / "apple_000.png").read_bytes())
    return work


@pytest.mark.parametrize("script, delay, stop", zip(SCRIPTS, [0.2, 0.4, 0.6, 0.8, 1.0, 1.2], [
    signal.SIGINT, signal.SIGINT, signal.SIGTERM, signal.SIGINT, signal.SIGINT, signal.SIGTERM]))
def test_a_stop_in_the_first_second_is_one_line(script, delay, stop, photos):
    """While Python loads TensorFlow and the other modules, before the script's own work."""
    arguments = ["--image", "train/refImage.png"] if script == "UnitaryImageAugmentationSample.py" else [
        "--train-dir", "train", "--validation-dir", "validation"]
    process = start_script(script, *arguments, "--log-dir", "logs", cwd=photos)
    time.sleep(delay)
    process.send_signal(stop)
    stdout, stderr = process.communicate(timeout=300)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert_stopped_in_one_line(result, stop, f"{script}: interrupted")
    assert not (photos / "logs").exists()


def test_reading_photos_stops_at_once(tmp_path, monkeypatch):
    """Ctrl-C while a folder is read: the reads not started yet are cancelled, not waited for."""
    reads = []

    def slow_read(path, image_size):
        reads.append(path)
        time.sleep(0.05)
        return np.zeros((image_size, image_size, 3), dtype=np.uint8)

    monkeypatch.setattr(image_files, "read_image", slow_read)
    threading.Timer(0.3, _thread.interrupt_main, (signal.SIGINT,)).start()  # as Ctrl-C does
    with pytest.raises(KeyboardInterrupt):
        image_files.read_images([f"photo_{number}.jpg" for number in range(400)], 8)
    read_when_stopped = len(reads)
    time.sleep(0.5)  # time for 20 more reads, were they going on
    assert read_when_stopped < 100 and len(reads) == read_when_stopped, (read_when_stopped, len(reads))


@pytest.mark.parametrize("script", ["FirstModel.py", "SVMModel.py"])
def test_ctrl_c_while_a_model_script_reads_photos_is_one_line(script, photos, monkeypatch):
    read_image, reads = image_files.read_image, []

    def ctrl_c_on_the_fifth(path, image_size):
        reads.append(path)
        if len(reads) == 5:
            signal.raise_signal(signal.SIGINT)
        return read_image(path, image_size)

    monkeypatch.setattr(image_files, "read_image", ctrl_c_on_the_fifth)
    result = run_in_process(script, "--train-dir", "train", "--validation-dir", "validation", "--log-dir", "logs",
                            "--model-file", f"model{'.joblib' if script == 'SVMModel.py' else '.h5'}", cwd=photos)
    assert_stopped_in_one_line(result, signal.SIGINT, f"{script}: interrupted; nothing saved")
    assert "Read " not in result.stdout and not (photos / "logs").exists()


def test_ctrl_c_during_check_labels_is_one_line(photos, monkeypatch):
    fit, calls = keras.Model.fit, []

    def ctrl_c_in_the_second_fold(model, *args, **options):
        calls.append(model)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)
        return fit(model, *args, **options)

    monkeypatch.setattr(keras.Model, "fit", ctrl_c_in_the_second_fold)
    result = run_in_process("SecondModel.py", "--check-labels", "--train-dir", "train", "--image-size", 32,
                            "--batch-size", 4, cwd=photos)
    assert_stopped_in_one_line(result, signal.SIGINT, "SecondModel.py: interrupted; nothing saved")
    assert "Fold 1 of 5 done" in result.stdout and "Fold 2" not in result.stdout


def test_a_stop_during_predict_is_one_line(photos, tmp_path, monkeypatch):
    model_file = tmp_path / "model.h5"
    keras_tools.save_run(FirstModel.build_model(32, 2), str(model_file), ["apple", "berry"],
                         keras_tools.BestEpoch(), 1, {})
    read_images = image_files.read_images

    def stopped_while_reading(paths, image_size):
        signal.raise_signal(signal.SIGTERM)  # `kill` while the photos are read
        return read_images(paths, image_size)

    monkeypatch.setattr(image_files, "read_images", stopped_while_reading)
    result = run_in_process("FirstModel.py", "--predict", photos / "validation", "--model-file", model_file,
                            cwd=tmp_path)
    assert_stopped_in_one_line(result, signal.SIGTERM, "FirstModel.py: interrupted; nothing saved")
    assert result.stdout == ""


def stop_while_writing_the_nth_file(monkeypatch, n, signal_number):
    """The stop comes as the nth file the script saves is being written."""
    new_hidden_file, written = image_files._new_hidden_file, []

    def stop_on_the_nth(folder, name):
        written.append(name)
        if len(written) == n:
            signal.raise_signal(signal_number)
        return new_hidden_file(folder, name)

    monkeypatch.setattr(image_files, "_new_hidden_file", stop_on_the_nth)


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
            assert len(image_files.list_images(output_dir / split / class_name)) == target
    assert all(path.read_bytes() == data for path, data in counted.items())


def test_a_balancer_killed_half_way_leaves_only_whole_images_and_a_rerun_ends_on_the_targets(
        balancer_arguments, tmp_path):
    process = start_script("ClassImageAugmentationSample.py", *balancer_arguments, cwd=tmp_path)
    # `kill` (SIGTERM) as the second class is being topped up, the first done.
    result = stop_at_line(process, f"{tmp_path / 'generated' / 'train' / 'berry'}: 2 images, generating",
                          signal.SIGTERM)
    assert_stopped_in_one_line(result, signal.SIGTERM, "interrupted; the images written so far are complete")
    check_balanced_output(balancer_arguments, tmp_path)


def test_ctrl_c_half_way_through_writing_an_image_leaves_it_whole(balancer_arguments, tmp_path, monkeypatch):
    stop_while_writing_the_nth_file(monkeypatch, 70, signal.SIGINT)
    result = run_in_process("ClassImageAugmentationSample.py", *balancer_arguments, cwd=tmp_path)
    assert_stopped_in_one_line(result, signal.SIGINT, "interrupted; the images written so far are complete")
    monkeypatch.undo()
    check_balanced_output(balancer_arguments, tmp_path)


def test_a_stopped_unitary_sample_leaves_only_whole_copies(tmp_path, monkeypatch):
    make_images(tmp_path / "in", {"cat": 1}, size=(300, 200))
    stop_while_writing_the_nth_file(monkeypatch, 4, signal.SIGINT)
    result = run_in_process("UnitaryImageAugmentationSample.py", "--image", tmp_path / "in" / "cat" / "cat_000.png",
                            "--output-dir", tmp_path / "out", "--log-dir", tmp_path / "logs", cwd=tmp_path)
    assert_stopped_in_one_line(result, signal.SIGINT, "interrupted; the copies written so far are complete")
    # The fourth copy, being written when the stop came, is there whole.
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [f"MY_CLASS_{n:04d}.jpg" for n in (1, 2, 3, 4)]
    for path in (tmp_path / "out").iterdir():
        with Image.open(path) as image:
            image.load()
