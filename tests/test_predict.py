"""--predict on every model script: one tab-separated line per image, with the saved model."""

import h5py
import joblib
import keras
import numpy as np
import pytest

import SVMModel
import photos
from helpers import save_model, assert_one_line_error, make_images, run_in_process, stderr_lines

# Each model script, with flags that train it in seconds on the tiny data set.
TRAINING_FLAGS = {
    "FirstModel.py": ["--epochs", 3, "--batch-size", 2, "--image-size", 32],
    "SecondModel.py": ["--epochs", 3, "--batch-size", 2, "--image-size", 32],
    "SVMModel.py": [],
}
MODEL_SUFFIX = {"FirstModel.py": ".h5", "SecondModel.py": ".h5", "SVMModel.py": ".joblib"}


def train(script, small_dataset, tmp_path):
    """Train script on the tiny set, then move the data away; returns the model file."""
    train_dir, validation_dir = small_dataset
    model_file = tmp_path / f"model{MODEL_SUFFIX[script]}"
    result = run_in_process(script, "--train-dir", train_dir, "--validation-dir", validation_dir,
                            "--log-dir", tmp_path / "logs", "--model-file", model_file,
                            *TRAINING_FLAGS[script], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # Prediction must not need the training folders: the class names are stored with the model.
    train_dir.rename(tmp_path / "train_moved_away")
    return model_file


def probabilities_of(script, model_file, paths):
    """What the model saved in model_file gives the images at paths, read as in training: the
    kept epoch's Keras model on pixels / 255, or the SVM's calibrated probabilities."""
    if script == "SVMModel.py":
        saved = joblib.load(model_file)
        images = np.stack([photos.read_image(path, saved["features"]["image_size"]) for path in paths])
        features = np.hstack(list(SVMModel.features(images, saved["features"]).values()))
        return saved["probabilities"].predict_proba(features)
    images = np.stack([photos.read_image(path, 32) for path in paths])
    return keras.models.load_model(model_file, compile=False).predict(images / 255.0, verbose=0)


def keep_an_epoch_unlike_the_last(model_file):
    """Save the set again with the trained weights as the kept epoch and a last epoch that
    predicts otherwise, so that the model file's predictions are told from the last file's."""
    model = keras.models.load_model(model_file, compile=False)
    trained = model.get_weights()
    model.set_weights([weights * 0.5 for weights in trained])
    save_model(model, model_file, ["apple", "berry"], 3, {"val_loss": 0.2, "val_accuracy": 1.0},
               kept=(2, {"val_loss": 0.1, "val_accuracy": 1.0}, trained))


@pytest.mark.parametrize("script", list(TRAINING_FLAGS))
def test_predicts_a_folder_with_the_kept_epoch_as_in_training(script, small_dataset, tmp_path):
    _, validation_dir = small_dataset
    model_file = train(script, small_dataset, tmp_path)
    if script != "SVMModel.py":
        keep_an_epoch_unlike_the_last(model_file)
    (validation_dir / "berry" / "broken.jpg").write_bytes(b"not a picture")
    (validation_dir / "notes.txt").write_text("not an image, not listed")

    result = run_in_process(script, "--predict", validation_dir, "--model-file", model_file, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [line.split("\t") for line in result.stdout.strip().splitlines()]
    paths = [line[0] for line in lines]
    # The 8 readable images, in sorted path order; the broken one only warned about.
    assert len(lines) == 8 and paths == sorted(paths)
    assert all(len(line) == 3 and line[1] in ("apple", "berry") for line in lines)
    warnings = stderr_lines(result)
    assert len(warnings) == 1 and "broken.jpg" in warnings[0]
    # The class and probability the saved model gives each image read as in training.
    expected = probabilities_of(script, model_file, paths)
    for (_, class_name, probability), row in zip(lines, expected):
        assert class_name == ["apple", "berry"][row.argmax()]
        assert float(probability) == pytest.approx(row.max(), abs=1e-4)
    if script != "SVMModel.py":  # not the last epoch's
        last = probabilities_of(script, str(model_file).replace(".h5", ".last.h5"), paths)
        assert np.abs(last.max(axis=1) - expected.max(axis=1)).max() > 1e-3

    # One image: the same line as in the folder.
    one = run_in_process(script, "--predict", lines[0][0], "--model-file", model_file, cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    assert one.stdout.strip().split("\t") == lines[0]


@pytest.mark.parametrize("script", list(TRAINING_FLAGS))
def test_prediction_errors_are_one_line(script, tmp_path):
    cat_photos = make_images(tmp_path / "photos", {"cat": 2})
    missing_model = run_in_process(script, "--predict", cat_photos, "--model-file",
                                   tmp_path / f"none{MODEL_SUFFIX[script]}", cwd=tmp_path)
    assert_one_line_error(missing_model, "none", "train one first")

    not_a_model = tmp_path / f"text{MODEL_SUFFIX[script]}"
    not_a_model.write_text("not a model")
    wrong_model = run_in_process(script, "--predict", cat_photos, "--model-file", not_a_model, cwd=tmp_path)
    assert_one_line_error(wrong_model, str(not_a_model), "--model-file")
    assert not_a_model.read_text() == "not a model"

    if MODEL_SUFFIX[script] == ".h5":
        # Class names where these scripts put them, and no model beside them.
        with h5py.File(tmp_path / "damaged.h5", "w") as damaged:
            damaged.attrs["class_names"] = '["cat", "dog"]'
        damaged_model = run_in_process(script, "--predict", cat_photos, "--model-file", tmp_path / "damaged.h5",
                                       cwd=tmp_path)
        assert_one_line_error(damaged_model, f"cannot load the model in '{tmp_path / 'damaged.h5'}'",
                              "--model-file")

    nothing = run_in_process(script, "--predict", tmp_path / "nowhere", "--model-file", not_a_model,
                             cwd=tmp_path)
    assert_one_line_error(nothing, "nowhere", "does not exist")
    (tmp_path / "empty").mkdir()
    empty = run_in_process(script, "--predict", tmp_path / "empty", "--model-file", not_a_model, cwd=tmp_path)
    assert_one_line_error(empty, "empty", "holds no images")
