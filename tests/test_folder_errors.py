"""Folders and settings that cannot be trained on: one line saying what to do, before any work."""

import os
import sys

import pytest

import photos
import runs
import training
from helpers import assert_one_line_error, make_images, run_in_process

SCRIPTS = ["FirstModel.py", "SecondModel.py", "TransferModel.py", "ClassImageAugmentationSample.py"]


def run_on(script, tmp_path, train_dir, validation_dir):
    return run_in_process(script, "--train-dir", train_dir, "--validation-dir", validation_dir,
                          cwd=tmp_path)


@pytest.mark.parametrize("script", SCRIPTS)
def test_missing_training_folder(script, tmp_path):
    validation_dir = make_images(tmp_path / "validation", {"a": 1, "b": 1})
    result = run_on(script, tmp_path, tmp_path / "nowhere", validation_dir)
    assert_one_line_error(result, f"'{tmp_path / 'nowhere'}' does not exist",
                          "one sub-folder of images per class")
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("script", SCRIPTS)
def test_training_folder_without_class_folders(script, tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "loose.jpg").write_bytes(b"not in a class folder")
    validation_dir = make_images(tmp_path / "validation", {"a": 1, "b": 1})
    result = run_on(script, tmp_path, tmp_path / "train", validation_dir)
    assert_one_line_error(result, f"'{tmp_path / 'train'}' has no class sub-folders")


@pytest.mark.parametrize("script", SCRIPTS)
def test_class_folder_without_images(script, tmp_path):
    train_dir = make_images(tmp_path / "train", {"a": 2, "b": 2})
    validation_dir = make_images(tmp_path / "validation", {"a": 1, "b": 0})
    result = run_on(script, tmp_path, train_dir, validation_dir)
    assert_one_line_error(result, f"'{validation_dir / 'b'}' has no images")


@pytest.mark.parametrize("script", ["FirstModel.py", "SecondModel.py"])
def test_model_file_in_missing_folder_fails_before_training(script, small_dataset, tmp_path):
    train_dir, validation_dir = small_dataset
    model_file = tmp_path / "no such folder" / "model.h5"
    result = run_in_process(script, "--train-dir", train_dir, "--validation-dir", validation_dir,
                            "--model-file", model_file, "--log-dir", tmp_path / "logs", cwd=tmp_path)
    assert_one_line_error(result, f"folder '{model_file.parent}' does not exist")
    assert "Epoch 1/" not in result.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_different_classes_in_training_and_validation(script, tmp_path):
    train_dir = make_images(tmp_path / "train", {"cat": 1, "dog": 1})
    validation_dir = make_images(tmp_path / "validation", {"cat": 1, "fox": 1})
    result = run_on(script, tmp_path, train_dir, validation_dir)
    assert_one_line_error(result, "['cat', 'dog']", "['cat', 'fox']", "same class sub-folders")


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_single_class_is_not_a_classifier(script, tmp_path):
    train_dir = make_images(tmp_path / "train", {"cat": 2})
    validation_dir = make_images(tmp_path / "validation", {"cat": 1})
    result = run_on(script, tmp_path, train_dir, validation_dir)
    assert_one_line_error(result, "single class 'cat'", "at least two")


@pytest.mark.parametrize("arguments, expected", [
    (["--model-file", "model.keras"], "must end in .h5"),
    (["--model-file", "."], "must end in .h5"),
    (["--batch-size", "0"], "--batch-size 0 must be 1 or more"),
    (["--epochs", "-1"], "--epochs -1 must be 1 or more"),
    (["--image-size", "8"], "needs 22 pixels or more"),
    (["--seed", "-1"], "--seed -1 must be a whole number from 0 to"),
    (["--initial-epoch", "-2"], "--initial-epoch -2 must be 0 (a new model) or more"),
])
@pytest.mark.parametrize("script", ["FirstModel.py", "SecondModel.py", "TransferModel.py"])
def test_settings_that_cannot_work_fail_before_training(script, arguments, expected, small_dataset,
                                                        tmp_path):
    train_dir, validation_dir = small_dataset
    result = run_in_process(script, "--train-dir", train_dir, "--validation-dir", validation_dir,
                            "--log-dir", tmp_path / "logs", *arguments, cwd=tmp_path)
    if script == "TransferModel.py":  # keras.applications' networks take 32 pixels or more
        expected = expected.replace("22", "32")
    assert_one_line_error(result, expected)
    assert "Epoch 1/" not in result.stdout


@pytest.mark.parametrize("script, arguments, expected", [
    ("FirstModel.py", ["--batch-size", "0"], "--batch-size 0 must be 1 or more"),
    ("SecondModel.py", ["--seed", "-1"], "--seed -1 must be a whole number from 0 to"),
    ("FirstModel.py", ["--image-size", "8"], "needs 22 pixels or more"),
    ("SVMModel.py", ["--seed", "-1"], "--seed -1 must be a whole number from 0 to"),
    ("SecondModel.py", ["--train-dir", "one class"], "has a single class 'cat'"),
    ("SVMModel.py", ["--train-dir", "nowhere"], "does not exist"),
    ("FirstModel.py", ["--train-dir", "empty class"], "has no images"),
    ("TransferModel.py", ["--image-size", "16"], "needs 32 pixels or more"),
    ("TransferModel.py", ["--train-dir", "one class"], "has a single class 'cat'"),
])
def test_check_labels_refuses_what_a_run_refuses(script, arguments, expected, small_dataset, tmp_path):
    train_dir, _ = small_dataset
    make_images(tmp_path / "one class", {"cat": 3})
    make_images(tmp_path / "empty class", {"cat": 3, "dog": 0})
    result = run_in_process(script, "--check-labels", "--train-dir", train_dir, *arguments, cwd=tmp_path)
    assert_one_line_error(result, expected)
    assert "Training " not in result.stdout and "Best of" not in result.stdout


@pytest.mark.parametrize("script, suffix", [("FirstModel.py", ".h5"), ("SVMModel.py", ".joblib")])
def test_a_model_folder_that_cannot_be_written_fails_before_training(script, suffix, small_dataset, tmp_path,
                                                                     monkeypatch):
    """A read-only drive, a folder of someone else's, a share without rights: the run stops at once."""
    temporary_file = runs.tempfile.TemporaryFile

    def refused(dir=None):  # the model's folder refuses; the system's temporary folder does not
        if dir is None:
            return temporary_file()
        raise PermissionError(13, "Permission denied", dir)

    monkeypatch.setattr(runs.tempfile, "TemporaryFile", refused)
    train_dir, validation_dir = small_dataset
    model_file = tmp_path / f"model{suffix}"
    result = run_in_process(script, "--train-dir", train_dir, "--validation-dir", validation_dir,
                            "--log-dir", tmp_path / "logs", "--model-file", model_file, cwd=tmp_path)
    assert_one_line_error(result, f"cannot write '{model_file}' (Permission denied): choose another --model-file")
    assert "Epoch 1/" not in result.stdout and "Best of" not in result.stdout
    assert not (tmp_path / "logs").exists()


def test_model_file_that_is_a_folder(small_dataset, tmp_path):
    train_dir, validation_dir = small_dataset
    (tmp_path / "model.h5").mkdir()
    result = run_in_process("FirstModel.py", "--train-dir", train_dir, "--validation-dir", validation_dir,
                            "--model-file", tmp_path / "model.h5", cwd=tmp_path)
    assert_one_line_error(result, "it is a folder")


def test_output_folder_that_is_a_file(small_dataset, tmp_path):
    train_dir, validation_dir = small_dataset
    (tmp_path / "generated").write_text("a file, not a folder")
    result = run_in_process("ClassImageAugmentationSample.py", "--train-dir", train_dir,
                            "--validation-dir", validation_dir, "--output-dir", tmp_path / "generated",
                            cwd=tmp_path)
    assert_one_line_error(result, str(tmp_path / "generated"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_training_folder_that_is_a_file(script, tmp_path):
    (tmp_path / "train.zip").write_bytes(b"PK")
    validation_dir = make_images(tmp_path / "validation", {"a": 1, "b": 1})
    result = run_on(script, tmp_path, tmp_path / "train.zip", validation_dir)
    assert_one_line_error(result, f"'{tmp_path / 'train.zip'}' is a file, not a folder")


def test_log_folder_that_is_a_file(small_dataset, tmp_path):
    train_dir, validation_dir = small_dataset
    (tmp_path / "logs").write_text("not a folder")
    result = run_in_process("SecondModel.py", "--train-dir", train_dir, "--validation-dir", validation_dir,
                            "--log-dir", tmp_path / "logs", cwd=tmp_path)
    assert_one_line_error(result, "is a file, not a folder")
    assert "Epoch 1/" not in result.stdout


def test_svm_negative_seed(small_dataset, tmp_path):
    train_dir, validation_dir = small_dataset
    result = run_in_process("SVMModel.py", "--train-dir", train_dir, "--validation-dir", validation_dir,
                            "--log-dir", tmp_path / "logs", "--seed", -5, cwd=tmp_path)
    assert_one_line_error(result, "--seed -5 must be a whole number from 0 to")


@pytest.mark.skipif(sys.platform != "linux", reason="other systems keep file names as valid Unicode")
def test_class_folder_name_that_is_not_text(tmp_path):
    make_images(tmp_path / "train", {"apple": 1})
    os.mkdir(os.fsencode(tmp_path / "train") + b"/caf\xe9")  # Latin-1 bytes, as old archives hold
    with pytest.raises(runs.DataError, match="train/caf\ufffd' has a name that is not valid text"):
        photos.class_folder_names(str(tmp_path / "train"), "training")


@pytest.mark.parametrize("augmentation, expected", [
    (dict(zca_whitening=True), "AUGMENTATION: zca_whitening is not applied to in-memory images: remove it"),
    (dict(rescale=1 / 255), "AUGMENTATION: rescale is not applied to in-memory images: remove it"),
    (dict(width_shift_range=20), "AUGMENTATION: width_shift_range must be a fraction of the image size"),
    (dict(rotation=15), "AUGMENTATION {'rotation': 15}: "),  # a misspelt keyword
])
def test_augmentation_the_in_memory_path_cannot_apply_is_refused(augmentation, expected):
    with pytest.raises(runs.DataError) as refused:
        training.check_training_settings(50, 0, 1, 150, augmentation)
    assert str(refused.value).startswith(expected)
    training.check_training_settings(50, 0, 1, 150, dict(rotation_range=15, horizontal_flip=True))


def test_first_model_refuses_such_an_augmentation_before_training(small_dataset, tmp_path):
    train_dir, validation_dir = small_dataset
    with pytest.raises(runs.DataError, match="AUGMENTATION: zca_whitening is not applied"):
        run_in_process("FirstModel.py", "--train-dir", train_dir, "--validation-dir", validation_dir,
                       "--log-dir", tmp_path / "logs", cwd=tmp_path,
                       constants={"AUGMENTATION": dict(zca_whitening=True)})
    assert not (tmp_path / "logs").exists() and not (tmp_path / "FirstModel.h5").exists()
