"""SVMModel.py end to end on a tiny data set made in the test, and its features."""

import re

import joblib
import numpy as np
import pytest
from PIL import Image

from helpers import assert_one_line_error, logged_scalars, make_images, run_in_process, stderr_lines

FINAL_LINE = re.compile(r"^accuracy: (\d+\.\d+) - val_accuracy: (\d+\.\d+) - time: \d+\.\d s$")


def make_striped_images(folder, count, seed):
    """count noisy images per class: red with horizontal stripes, blue with vertical ones.

    Colour and edge direction both tell the classes apart, as the SVM's features see them.
    """
    rng = np.random.default_rng(seed)
    for class_name, colour, axis in (("apple", (200, 40, 40), 0), ("berry", (40, 40, 200), 1)):
        (folder / class_name).mkdir(parents=True)
        for number in range(count):
            pixels = np.clip(np.array(colour) + rng.integers(-30, 30, size=(48, 48, 3)), 0, 255)
            stripes = (np.arange(48) // 4 % 2 == 0)
            pixels[stripes if axis == 0 else slice(None), slice(None) if axis == 0 else stripes] //= 3
            Image.fromarray(pixels.astype(np.uint8)).save(folder / class_name / f"{number:03d}.png")
    return folder


def test_trains_reports_logs_and_saves(tmp_path):
    train_dir = make_striped_images(tmp_path / "train", 6, seed=1)
    validation_dir = make_striped_images(tmp_path / "validation", 4, seed=2)
    model_file = tmp_path / "svm.joblib"
    result = run_in_process("SVMModel.py", "--train-dir", train_dir, "--validation-dir", validation_dir,
                            "--log-dir", tmp_path / "logs", "--model-file", model_file, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == []

    final = FINAL_LINE.match(result.stdout.strip().splitlines()[-1])
    assert final, result.stdout
    assert float(final.group(2)) > 0.5  # better than chance
    assert "by 5-fold cross-validation" in result.stdout
    assert "| apple |" in result.stdout and "Confusion matrix" in result.stdout

    saved = joblib.load(model_file)
    assert saved["class_names"] == ["apple", "berry"] and saved["features"]["image_size"] == 64
    assert saved["pipeline"].predict(np.zeros((1, 640 + 324 + 192))).shape == (1,)

    # Beside the CNN runs in TensorBoard, under the same tag names.
    runs = list((tmp_path / "logs").iterdir())
    assert len(runs) == 1 and re.fullmatch(r"SVMModel-\d{8}-\d{6}", runs[0].name)
    assert logged_scalars(runs[0] / "validation")["epoch_accuracy"] == {0: float(final.group(2))}


def test_fewer_folds_when_a_class_is_small(small_dataset, tmp_path):
    train_dir, validation_dir = small_dataset  # 4 berries: 4 folds, as 5 would need 5 per class
    result = run_in_process("SVMModel.py", "--train-dir", train_dir, "--validation-dir", validation_dir,
                            "--log-dir", tmp_path / "logs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "by 4-fold cross-validation" in result.stdout


def test_needs_two_images_per_class_for_cross_validation(tmp_path):
    train_dir = make_images(tmp_path / "train", {"apple": 3, "berry": 1})
    validation_dir = make_images(tmp_path / "validation", {"apple": 1, "berry": 1}, seed=1)
    result = run_in_process("SVMModel.py", "--train-dir", train_dir, "--validation-dir", validation_dir,
                            "--log-dir", tmp_path / "logs", cwd=tmp_path)
    assert_one_line_error(result, str(train_dir / "berry"), "at least 2 per class")
    assert not (tmp_path / "SVMModel.joblib").exists()


def test_model_file_must_be_joblib(small_dataset, tmp_path):
    train_dir, validation_dir = small_dataset
    result = run_in_process("SVMModel.py", "--train-dir", train_dir, "--validation-dir", validation_dir,
                            "--model-file", tmp_path / "svm.h5", cwd=tmp_path)
    assert_one_line_error(result, "svm.h5", ".joblib")


def test_features_are_colour_and_layout_edge_direction_and_a_thumbnail():
    import SVMModel

    settings = SVMModel.FEATURES
    # A 128-colour histogram of the whole image and of 4 cells; 3 x 3 blocks of 4 cells x 9
    # directions; an 8 x 8 RGB thumbnail.
    flat = np.full((64, 64, 3), 128, dtype=np.uint8)
    kinds = SVMModel.features([flat], settings)
    assert {kind: values.shape for kind, values in kinds.items()} == {
        "colour": (1, 5 * 128), "hog": (1, 3 * 3 * 4 * 9), "thumbnail": (1, 8 * 8 * 3)}
    assert np.all(kinds["hog"] == 0)  # no edges
    assert np.allclose(kinds["thumbnail"], 128 / 255)
    # Vertical stripes have horizontal gradients only: all in the 0-degree bin.
    stripes = np.zeros((64, 64, 3), dtype=np.uint8)
    stripes[:, ::8] = 255
    blocks = SVMModel.hog(stripes, 16, 9).reshape(3, 3, 4, 9)
    assert blocks[..., 0].sum() > 0 and np.allclose(blocks[..., 1:8], 0)
    # The same colours on the other side: the same whole-image histogram, other cells.
    red_left = np.zeros((64, 64, 3), dtype=np.uint8)
    red_left[:, :32, 0] = 255
    left, right = (SVMModel.colour_histograms(image, (8, 4, 4), 2) for image in (red_left, red_left[:, ::-1]))
    assert np.allclose(left[:128], right[:128]) and not np.allclose(left[128:], right[128:])
    # Each kind of feature weighs the same in the distance, whatever its number of columns.
    columns = SVMModel.feature_columns(kinds)
    assert columns.transformer_weights == pytest.approx({"colour": 640 ** -0.5, "hog": 324 ** -0.5,
                                                         "thumbnail": 192 ** -0.5})
