"""--predict on every model script: one tab-separated line per image, with the saved model."""

import h5py
import pytest

from helpers import assert_one_line_error, make_images, run_in_process, stderr_lines

# Each model script, with flags that train it in seconds on the tiny data set.
TRAINING_FLAGS = {
    "FirstModel.py": ["--epochs", 3, "--batch-size", 2, "--image-size", 32],
    "SecondModel.py": ["--epochs", 3, "--batch-size", 2, "--image-size", 32],
    "SVMModel.py": [],
}
MODEL_SUFFIX = {"FirstModel.py": ".h5", "SecondModel.py": ".h5", "SVMModel.py": ".joblib"}


def train(script, small_dataset, tmp_path):
    """Train script on the tiny set, then move the data away; returns (model file, val_accuracy)."""
    train_dir, validation_dir = small_dataset
    model_file = tmp_path / f"model{MODEL_SUFFIX[script]}"
    result = run_in_process(script, "--train-dir", train_dir, "--validation-dir", validation_dir,
                        "--log-dir", tmp_path / "logs", "--model-file", model_file,
                        *TRAINING_FLAGS[script], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    val_accuracy = float(result.stdout.strip().splitlines()[-1].split("val_accuracy: ")[1].split()[0])
    # Prediction must not need the training folders: the class names are stored with the model.
    train_dir.rename(tmp_path / "train_moved_away")
    return model_file, val_accuracy


@pytest.mark.parametrize("script", list(TRAINING_FLAGS))
def test_predicts_a_folder_as_in_validation(script, small_dataset, tmp_path):
    _, validation_dir = small_dataset
    model_file, val_accuracy = train(script, small_dataset, tmp_path)
    (validation_dir / "berry" / "broken.jpg").write_bytes(b"not a picture")
    (validation_dir / "notes.txt").write_text("not an image, not listed")

    result = run_in_process(script, "--predict", validation_dir, "--model-file", model_file, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [line.split("\t") for line in result.stdout.strip().splitlines()]
    paths = [line[0] for line in lines]
    # The 8 readable images, in sorted path order; the broken one only warned about.
    assert len(lines) == 8 and paths == sorted(paths)
    assert all(len(line) == 3 and line[1] in ("apple", "berry") and 0 < float(line[2]) <= 1
               for line in lines)
    warnings = stderr_lines(result)
    assert len(warnings) == 1 and "broken.jpg" in warnings[0]
    # The same preprocessing as in training: the accuracy the training run reported.
    correct = sum(line[1] == line[0].split("/")[-2] for line in lines)
    assert correct / len(lines) == pytest.approx(val_accuracy, abs=1e-4)

    # One image: the same line as in the folder.
    one = run_in_process(script, "--predict", lines[0][0], "--model-file", model_file, cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    assert one.stdout.strip().split("\t") == lines[0]


@pytest.mark.parametrize("script", list(TRAINING_FLAGS))
def test_prediction_errors_are_one_line(script, tmp_path):
    photos = make_images(tmp_path / "photos", {"cat": 2})
    missing_model = run_in_process(script, "--predict", photos, "--model-file",
                               tmp_path / f"none{MODEL_SUFFIX[script]}", cwd=tmp_path)
    assert_one_line_error(missing_model, "none", "train one first")

    not_a_model = tmp_path / f"text{MODEL_SUFFIX[script]}"
    not_a_model.write_text("not a model")
    wrong_model = run_in_process(script, "--predict", photos, "--model-file", not_a_model, cwd=tmp_path)
    assert_one_line_error(wrong_model, str(not_a_model), "--model-file")
    assert not_a_model.read_text() == "not a model"

    if MODEL_SUFFIX[script] == ".h5":
        # Class names where these scripts put them, and no model beside them.
        with h5py.File(tmp_path / "damaged.h5", "w") as damaged:
            damaged.attrs["class_names"] = '["cat", "dog"]'
        damaged_model = run_in_process(script, "--predict", photos, "--model-file", tmp_path / "damaged.h5",
                                   cwd=tmp_path)
        assert_one_line_error(damaged_model, f"cannot load the model in '{tmp_path / 'damaged.h5'}'",
                              "--model-file")

    nothing = run_in_process(script, "--predict", tmp_path / "nowhere", "--model-file", not_a_model,
                         cwd=tmp_path)
    assert_one_line_error(nothing, "nowhere", "does not exist")
    (tmp_path / "empty").mkdir()
    empty = run_in_process(script, "--predict", tmp_path / "empty", "--model-file", not_a_model, cwd=tmp_path)
    assert_one_line_error(empty, "empty", "holds no images")
