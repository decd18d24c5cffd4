"""SVMModel.py end to end on a tiny data set made in the test, and its features."""

import re

import joblib
import numpy as np
from PIL import Image

from helpers import assert_one_line_error, logged_scalars, make_images, run_in_process, run_script, stderr_lines

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
    result = run_script("SVMModel.py", "--train-dir", train_dir, "--validation-dir", validation_dir,
                        "--log-dir", tmp_path / "logs", "--model-file", model_file, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == []

    final = FINAL_LINE.match(result.stdout.strip().splitlines()[-1])
    assert final, result.stdout
    assert float(final.group(2)) > 0.5  # better than chance
    assert "by 5-fold cross-validation" in result.stdout
    assert "| apple |" in result.stdout and "Confusion matrix" in result.stdout

    saved = joblib.load(model_file)
    assert saved["class_names"] == ["apple", "berry"] and saved["image_size"] == 64
    assert saved["pipeline"].predict(np.zeros((1, 1812))).shape == (1,)

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
    validation_dir = make_images(tmp_path / "validation", {"apple": 1, "berry": 1})
    result = run_in_process("SVMModel.py", "--train-dir", train_dir, "--validation-dir", validation_dir,
                        "--log-dir", tmp_path / "logs", cwd=tmp_path)
    assert_one_line_error(result, str(train_dir / "berry"), "at least 2 per class")
    assert not (tmp_path / "SVMModel.joblib").exists()


def test_model_file_must_be_joblib(small_dataset, tmp_path):
    train_dir, validation_dir = small_dataset
    result = run_in_process("SVMModel.py", "--train-dir", train_dir, "--validation-dir", validation_dir,
                        "--model-file", tmp_path / "svm.h5", cwd=tmp_path)
    assert_one_line_error(result, "svm.h5", ".joblib")


def test_features_are_colour_and_edge_direction():
    import SVMModel

    # Hue, saturation and value histograms, then 7 x 7 blocks of 4 cells x 9 directions.
    flat = np.full((64, 64, 3), 128, dtype=np.uint8)
    assert SVMModel.features([flat]).shape == (1, 3 * 16 + 7 * 7 * 4 * 9)
    assert np.all(SVMModel.hog(flat) == 0)  # no edges
    # Vertical stripes have horizontal gradients only: all in the 0-degree bin.
    stripes = np.zeros((64, 64, 3), dtype=np.uint8)
    stripes[:, ::8] = 255
    blocks = SVMModel.hog(stripes).reshape(7, 7, 4, 9)
    assert blocks[..., 0].sum() > 0 and np.allclose(blocks[..., 1:8], 0)
    # The same colours anywhere give the same histograms.
    red_left = np.zeros((64, 64, 3), dtype=np.uint8)
    red_left[:, :32, 0] = 255
    assert np.allclose(SVMModel.colour_histograms(red_left), SVMModel.colour_histograms(red_left[:, ::-1]))
