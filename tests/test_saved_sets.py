"""A model's four files are one set, and a full disk never costs the set saved before."""

import contextlib
import hashlib
import os
import struct

import numpy as np
import pytest
from PIL import Image

import FirstModel
import image_files
import keras_tools
from helpers import assert_one_line_error, make_images, run_in_process, set_mark

POSIX_ONLY = pytest.mark.skipif(os.name == "nt", reason="a file-size limit (ulimit -f) is a POSIX matter")
SET = ["model.h5", "model.weights.h5", "model.last.h5", "model.last.weights.h5"]


def snapshot(folder):
    """{name: sha256} of every file in folder, hidden ones included."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.iterdir()}


def save_a_set(model_file, epoch, image_size=32):
    model = FirstModel.build_model(image_size, 2)
    FirstModel.compile_model(model)
    keras_tools.save_run(model, str(model_file), ["apple", "berry"], keras_tools.BestEpoch(), epoch, {})


def test_every_file_of_a_set_carries_the_same_mark_and_each_save_a_new_one(tmp_path):
    save_a_set(tmp_path / "model.h5", 1)
    first = {name: set_mark(tmp_path / name) for name in SET}
    assert len(set(first.values())) == 1 and None not in first.values()
    save_a_set(tmp_path / "model.h5", 2)
    second = {name: set_mark(tmp_path / name) for name in SET}
    assert len(set(second.values())) == 1 and second != first


def test_a_set_cut_between_its_renames_is_refused_in_one_line(small_dataset, tmp_path, monkeypatch):
    """Power lost half-way through renaming a new set into place: the model file is new, the last
    epoch's file still the old one. Resuming says so, and which file to go on from."""
    save_a_set(tmp_path / "model.h5", 2)
    replace, renamed = os.replace, []

    def power_lost_after_two(source, destination):
        if len(renamed) == 2:
            raise SystemExit("the machine stops here")
        renamed.append(destination)
        replace(source, destination)

    monkeypatch.setattr(image_files.os, "replace", power_lost_after_two)
    with pytest.raises(SystemExit):
        save_a_set(tmp_path / "model.h5", 2)
    monkeypatch.undo()
    assert [os.path.basename(path) for path in renamed] == ["model.h5", "model.weights.h5"]

    train_dir, validation_dir = small_dataset
    arguments = ["--train-dir", train_dir, "--validation-dir", validation_dir, "--image-size", 32,
                 "--batch-size", 4, "--epochs", 3, "--initial-epoch", 2, "--log-dir", tmp_path / "logs"]
    refused = run_in_process("FirstModel.py", *arguments, "--model-file", tmp_path / "model.h5", cwd=tmp_path)
    assert_one_line_error(refused, f"cannot resume '{tmp_path / 'model.h5'}': it and '{tmp_path / 'model.last.h5'}' "
                                   "were not saved together", f"--model-file {tmp_path / 'model.last.h5'}")
    assert "Epoch" not in refused.stdout

    # The line's advice works: the last epoch alone goes on.
    resumed = run_in_process("FirstModel.py", *arguments, "--model-file", tmp_path / "model.last.h5", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "Epoch 3/3" in resumed.stdout


@contextlib.contextmanager
def file_size_limit(limit):
    """No file written in the block may pass limit bytes, as under `ulimit -f`: writing more fails
    with EFBIG (Python ignores SIGXFSZ). The soft limit is lowered, then put back."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.fixture
def earlier_set(small_dataset, tmp_path):
    """A model folder holding the set of an earlier run: (folder, its files' digests)."""
    (tmp_path / "models").mkdir()
    save_a_set(tmp_path / "models" / "model.h5", 1, image_size=64)
    return tmp_path / "models", snapshot(tmp_path / "models")


def events_records(events_file):
    """Where each record of a TensorBoard events file ends, in bytes (TFRecord framing)."""
    data, ends = events_file.read_bytes(), []
    while (ends[-1] if ends else 0) < len(data):
        start = ends[-1] if ends else 0
        ends.append(start + 8 + 4 + struct.unpack("<Q", data[start:start + 8])[0] + 4)
    return ends


@POSIX_ONLY
def test_model_files_over_the_limit_fail_in_one_line_and_keep_the_earlier_set(small_dataset, earlier_set, tmp_path):
    train_dir, validation_dir = small_dataset
    models, before = earlier_set
    # The TensorBoard files fit under 1.2 MB, each model file (with Adadelta's state) does not.
    with file_size_limit(1_200_000):
        result = run_in_process("FirstModel.py", "--train-dir", train_dir, "--validation-dir", validation_dir,
                                "--image-size", 64, "--batch-size", 4, "--epochs", 1, "--log-dir", tmp_path / "logs",
                                "--model-file", models / "model.h5", cwd=tmp_path)
    assert_one_line_error(result, f"FirstModel.py: error: cannot write '{models / 'model.h5'}' (File too large): "
                                  "nothing was replaced")
    assert "3/3 - " in result.stdout  # trained, then could not save
    assert snapshot(models) == before  # byte for byte, and nothing beside it


@POSIX_ONLY
def test_tensorboard_files_over_the_limit_fail_in_one_line_and_keep_the_earlier_set(small_dataset, earlier_set,
                                                                                   tmp_path):
    train_dir, validation_dir = small_dataset
    models, before = earlier_set
    arguments = ["--train-dir", train_dir, "--validation-dir", validation_dir, "--image-size", 64,
                 "--batch-size", 4, "--epochs", 1, "--model-file", models / "model.h5"]
    # The run's own events file: its pictures of the training images are written before training,
    # the confusion matrix and mistakes after the last epoch; the limit falls between. (TensorFlow
    # tells of a write it could not make at a later flush, if at all: a limit before training is
    # found at the end too.)
    measured = run_in_process("FirstModel.py", *arguments, "--log-dir", tmp_path / "measured",
                              "--model-file", tmp_path / "measured.h5", cwd=tmp_path)
    assert measured.returncode == 0, measured.stderr
    [events_file] = next((tmp_path / "measured").iterdir()).glob("events.out.tfevents.*")
    training_images_end = events_records(events_file)[2]  # the file's version, the HParams, the pictures
    limit = training_images_end + 100

    with file_size_limit(limit):
        result = run_in_process("FirstModel.py", *arguments, "--log-dir", tmp_path / "logs", cwd=tmp_path)
    [run_dir] = (tmp_path / "logs").iterdir()
    [events_file] = run_dir.glob("events.out.tfevents.*")
    assert_one_line_error(result, f"FirstModel.py: error: cannot write TensorBoard's file '{events_file}' "
                                  "(File too large)", "--log-dir")
    assert "3/3 - " in result.stdout
    assert snapshot(models) == before


@POSIX_ONLY
def test_a_tensorboard_file_over_the_limit_is_named_in_one_line(tmp_path):
    """As the scripts write their pictures, before training or after it."""
    import tensorflow as tf

    run_log = tf.summary.create_file_writer(str(tmp_path / "run"))
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8))
    with file_size_limit(100_000), pytest.raises(image_files.DataError) as refused:
        # TensorFlow tells of the picture it could not write at a later, small record.
        keras_tools.log_picture(run_log, "noise", noise, 0, "300 KB of noise")
        keras_tools.log_text(run_log, "report", "a table", 0)
    [events_file] = (tmp_path / "run").glob("events.out.tfevents.*")
    assert str(refused.value) == (f"cannot write TensorBoard's file '{events_file}' (File too large): "
                                  "free some space, or choose another --log-dir")


@POSIX_ONLY
def test_a_balancer_on_a_full_disk_fails_in_one_line_and_leaves_no_part_file(tmp_path):
    train_dir = make_images(tmp_path / "train", {"apple": 2, "berry": 2}, size=(200, 150))
    validation_dir = make_images(tmp_path / "validation", {"apple": 1, "berry": 1}, size=(200, 150))
    with file_size_limit(5000):  # the originals are of 10 KB and more
        result = run_in_process("ClassImageAugmentationSample.py", "--train-dir", train_dir,
                                "--validation-dir", validation_dir, "--output-dir", tmp_path / "generated",
                                cwd=tmp_path)
    assert_one_line_error(result, f"cannot write in '{tmp_path / 'generated' / 'train' / 'apple'}' (File too large)")
    assert [path for path in (tmp_path / "generated").rglob("*") if path.is_file()] == []
