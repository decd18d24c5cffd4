"""Missing or empty data folders: one line naming the folder, non-zero exit, no traceback."""

import pytest

from conftest import make_images, own_stderr_lines, run_script

SCRIPTS = ["FirstModel.py", "SecondModel.py", "ClassImageAugmentationSample.py"]


def run_on(script, tmp_path, train_dir, validation_dir):
    return run_script(script, "--train-dir", train_dir, "--validation-dir", validation_dir,
                      cwd=tmp_path)


def assert_one_line_error(result, *expected_parts):
    assert result.returncode != 0
    lines = own_stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for part in expected_parts:
        assert part in lines[0]


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
    result = run_script(script, "--train-dir", train_dir, "--validation-dir", validation_dir,
                        "--model-file", model_file, "--log-dir", tmp_path / "logs", cwd=tmp_path)
    assert_one_line_error(result, f"folder '{model_file.parent}' does not exist")
    assert "Epoch 1/" not in result.stdout
