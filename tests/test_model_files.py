"""Model files are written whole, under a hidden name renamed into place: a save cut short, a full
disk or a file-size limit never leaves half a file, nor costs the files saved before."""

import contextlib
import hashlib
import os
import struct

import keras
import numpy as np
import pytest
from PIL import Image

import FirstModel
import reports
import runs
from helpers import assert_one_line_error, make_images, run_in_process, save_model

POSIX_ONLY = pytest.mark.skipif(os.name == "nt", reason="a file-size limit (ulimit -f) is a POSIX matter")
SET = ["model.h5", "model.weights.h5", "model.last.h5", "model.last.weights.h5"]


def snapshot(folder):
    """{name: sha256} of every file in folder, hidden ones included."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.iterdir()}


def save_a_set(model_file, epoch, image_size=32):
    model = FirstModel.build_model(image_size, 2)
    FirstModel.compile_model(model)
    save_model(model, model_file, ["apple", "berry"], epoch)


def writer(text, fail=False):
    def save(path):
        with open(path, "w") as file:
            file.write(text)
        if fail:
            raise OSError(28, "No space left on device")
    return save


def test_files_are_replaced_only_once_all_are_written(tmp_path):
    for name in SET:
        (tmp_path / name).write_text(f"old {name}")
    # The third file fails (a full disk): none is replaced, not even the first two, nothing is
    # left behind, and the error names the file in one line.
    with pytest.raises(runs.DataError) as failed:
        runs.write_whole({str(tmp_path / name): writer(f"new {name}", fail=index == 2)
                          for index, name in enumerate(SET)})
    assert str(failed.value).startswith(f"cannot write '{tmp_path / 'model.last.h5'}' "
                                        "(No space left on device): nothing was replaced")
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(SET)
    assert all((tmp_path / name).read_text() == f"old {name}" for name in SET)
    runs.write_whole({str(tmp_path / name): writer(f"new {name}") for name in SET})
    assert all((tmp_path / name).read_text() == f"new {name}" for name in SET)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(SET)


def test_a_model_save_cut_short_leaves_the_model_saved_before(tmp_path, monkeypatch):
    """Keras raises half-way through writing the file (as h5py does on a damaged drive)."""
    save_a_set(tmp_path / "model.h5", 1)
    saved = snapshot(tmp_path)

    def half_a_model(model, path, *args, **kwargs):
        with open(path, "wb") as file:
            file.write(b"\x89HDF half a model")
        raise RuntimeError("Can't decrement id ref count (unable to extend file properly)")

    monkeypatch.setattr(keras.Model, "save", half_a_model)
    with pytest.raises(runs.DataError, match=r"cannot write '.*model.h5' \(Can't decrement id ref count"):
        save_a_set(tmp_path / "model.h5", 2)
    monkeypatch.undo()
    assert snapshot(tmp_path) == saved
    assert keras.models.load_model(tmp_path / "model.h5").output_shape == (None, 2)


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
    # The first file written: the run's state after its first epoch.
    assert_one_line_error(result, f"FirstModel.py: error: cannot write '{models / 'model.checkpoint.h5'}' "
                                  "(File too large): nothing was replaced")
    assert "TensorBoard run: " in result.stdout  # trained, then could not save
    assert snapshot(models) == before  # byte for byte, and nothing beside it


@POSIX_ONLY
def test_tensorboard_files_over_the_limit_fail_in_one_line_and_keep_the_earlier_set(small_dataset, earlier_set,
                                                                                    tmp_path):
    train_dir, validation_dir = small_dataset
    models, before = earlier_set
    arguments = ["--train-dir", train_dir, "--validation-dir", validation_dir, "--image-size", 64,
                 "--batch-size", 4, "--epochs", 1, "--model-file", models / "model.h5"]
    # The run's own events file: its settings, then its pictures of the training images, written
    # before training; the limit falls between.
    measured = run_in_process("FirstModel.py", *arguments, "--log-dir", tmp_path / "measured",
                              "--model-file", tmp_path / "measured.h5", cwd=tmp_path)
    assert measured.returncode == 0, measured.stderr
    [events_file] = next((tmp_path / "measured").iterdir()).glob("events.out.tfevents.*")
    limit = events_records(events_file)[1] + 100  # the file's version, the HParams

    with file_size_limit(limit):
        result = run_in_process("FirstModel.py", *arguments, "--log-dir", tmp_path / "logs", cwd=tmp_path)
    [run_dir] = (tmp_path / "logs").iterdir()
    assert_one_line_error(result, f"FirstModel.py: error: cannot write TensorBoard's events in '{run_dir}': free "
                                  "some space, or choose another --log-dir")
    assert "Epoch" not in result.stdout
    assert snapshot(models) == before


@POSIX_ONLY
def test_a_tensorboard_file_over_the_limit_is_named_in_one_line(tmp_path):
    """As the scripts write their pictures, before training or after it."""
    run_dir = str(tmp_path / "run")
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8))
    with file_size_limit(100_000), pytest.raises(runs.DataError) as refused:
        # TensorFlow tells of the picture it could not write at a later, small record.
        reports.log_picture(run_dir, "noise", noise, 0, "300 KB of noise")
        reports.log_text(run_dir, "report", "a table", 0)
    assert str(refused.value) == (f"cannot write TensorBoard's events in '{run_dir}': free some space, or choose "
                                  "another --log-dir")


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
