"""--export: LiteRT files an app runs without TensorFlow, compared with the Keras model; --predict with
them; the README's app example, run as written; and every bad input in one line, nothing replaced."""

import errno
import importlib
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

import photos
import runs
import training
from helpers import (CLASS_COLOURS, REPO, assert_one_line_error, make_images, run_in_process,
                     save_model, stderr_lines)

CLASSES = {"apple": 12, "berry": 12, "cherry": 12}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """FirstModel trained on three colours, then exported: (folder, the flags of both runs, --export's result)."""
    folder = tmp_path_factory.mktemp("export")
    flags = ["--train-dir", make_images(folder / "train", CLASSES, seed=1),
             "--validation-dir", make_images(folder / "validation", {name: 6 for name in CLASSES}, seed=2),
             "--model-file", folder / "FirstModel.h5"]
    trained = run_in_process("FirstModel.py", *flags, "--epochs", 4, "--batch-size", 4, "--image-size", 32,
                             "--log-dir", folder / "logs", cwd=folder)
    assert trained.returncode == 0, trained.stderr
    return folder, flags, run_in_process("FirstModel.py", *flags, "--export", cwd=folder)


def interpreter_outputs(model_file, images):
    """What an app gets from the file: probabilities of each uint8 image, given one at a time."""
    interpreter = Interpreter(model_path=str(model_file))
    interpreter.allocate_tensors()
    (pixels,), (output,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert pixels["dtype"] == np.uint8 and list(pixels["shape"]) == [1, 32, 32, 3]
    assert pixels["quantization"] in [(0.0, 0), (1.0, 0)]  # none (float file) or scale 1: the pixels as they are
    assert output["dtype"] == np.float32 and list(output["shape"]) == [1, len(CLASSES)]
    outputs = []
    for image in images:
        interpreter.set_tensor(pixels["index"], image[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output["index"])[0].copy())
    return np.array(outputs)


def test_export_writes_the_files_and_the_report_beside_the_model(exported):
    folder, _, result = exported
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == []  # no converter log, no warning: the int8 file keeps the accuracy
    assert (folder / "FirstModel.labels.txt").read_text() == "apple\nberry\ncherry\n"
    report = (folder / "FirstModel.export.txt").read_text()
    assert report in result.stdout
    rows = {line.split()[0]: line.split()[1:] for line in report.splitlines()[2:]}
    assert list(rows) == ["FirstModel.h5", "FirstModel.tflite", "FirstModel.int8.tflite"]
    assert rows["FirstModel.tflite"][:2] == rows["FirstModel.h5"][:1] + ["100.0%"]  # same accuracy, all agree
    assert float(rows["FirstModel.tflite"][2]) < 1e-4
    assert sorted(path.name for path in folder.iterdir() if path.name.startswith(".")) == []


def test_the_float_file_gives_the_keras_probabilities_and_the_int8_file_its_classes(exported):
    folder, _, _ = exported
    model, class_names = training.load_model(str(folder / "FirstModel.h5"))
    images, labels, _ = photos.read_image_folder(folder / "validation", class_names, 32, "validation")
    expected = training.probabilities(model, images)
    assert np.mean(expected.argmax(1) == labels) == 1  # the colours are told apart
    assert np.abs(interpreter_outputs(folder / "FirstModel.tflite", images) - expected).max() < 1e-4
    int8 = interpreter_outputs(folder / "FirstModel.int8.tflite", images)
    assert np.mean(int8.argmax(1) == expected.argmax(1)) >= 0.9
    assert np.allclose(int8.sum(1), 1, atol=0.02)  # probabilities, dequantized


def test_the_int8_file_takes_the_pixels_as_they_are_whatever_the_calibration_photos(exported, tmp_path):
    """Dark calibration photos (none reaches 255) must not change the input's scale an app cannot know."""
    folder, _, _ = exported
    model, class_names = training.load_model(str(folder / "FirstModel.h5"))
    images, _, _ = photos.read_image_folder(folder / "validation", class_names, 32, "validation")
    int8 = training.litert_converted(model, (images * 0.6).astype(np.uint8))[1]
    (tmp_path / "dark.int8.tflite").write_bytes(int8)
    expected = training.probabilities(model, images).argmax(1)
    assert np.mean(interpreter_outputs(tmp_path / "dark.int8.tflite", images).argmax(1) == expected) >= 0.9


def predicted(folder, model_name, photos_dir):
    result = run_in_process("FirstModel.py", "--predict", photos_dir, "--model-file", folder / model_name, cwd=folder)
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == []
    return [line.split("\t") for line in result.stdout.splitlines()]


def test_predict_with_the_exported_files_gives_the_keras_model_classes(exported):
    folder, _, _ = exported
    by_keras = predicted(folder, "FirstModel.h5", folder / "validation")
    by_float = predicted(folder, "FirstModel.tflite", folder / "validation")
    by_int8 = predicted(folder, "FirstModel.int8.tflite", folder / "validation")
    assert len(by_keras) == 18
    assert [line[:2] for line in by_float] == [line[:2] for line in by_keras]
    assert np.allclose([float(line[2]) for line in by_float], [float(line[2]) for line in by_keras], atol=1e-4)
    assert np.mean([line[1] == keras_line[1] for line, keras_line in zip(by_int8, by_keras)]) >= 0.9


def test_predict_falls_back_on_tensorflow_interpreter_where_litert_has_no_wheel(exported, monkeypatch):
    """Intel Macs: no ai-edge-litert; TensorFlow's interpreter runs the same file, without its deprecation warning."""
    folder, _, _ = exported
    by_litert = predicted(folder, "FirstModel.int8.tflite", folder / "validation")
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import fails as where it is not installed
    assert predicted(folder, "FirstModel.int8.tflite", folder / "validation") == by_litert


def test_the_readme_app_example_runs_as_written_without_tensorflow(exported, tmp_path):
    folder, _, _ = exported
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    app = re.search(r"```python\n(# app\.py.*?)```", readme, re.DOTALL).group(1)
    model_name = re.search(r'model_path="(\w+)\.int8\.tflite"', app).group(1)
    for suffix in (".int8.tflite", ".labels.txt"):
        (tmp_path / f"{model_name}{suffix}").write_bytes((folder / f"FirstModel{suffix}").read_bytes())
    (tmp_path / "app.py").write_text(app)
    for blocked in ("tensorflow", "keras"):  # the app's folder comes first on its path: neither can be imported
        (tmp_path / f"{blocked}.py").write_text("raise ImportError('not in an app')\n")
    # Photos as a phone gives them: large JPEGs (decoded at a reduced scale), one turned by its EXIF orientation;
    # half one class's colour, half another's, so that the probabilities are not all near 1.
    photos_dir, rng = tmp_path / "photos", np.random.default_rng(3)
    photos_dir.mkdir()
    for number, (left, right) in enumerate([(0, 1), (1, 2), (2, 0), (0, 2)]):
        pixels = np.zeros((120, 160, 3)) + [[CLASS_COLOURS[left]] * 80 + [CLASS_COLOURS[right]] * 80]
        photo = Image.fromarray(np.clip(pixels + rng.integers(-30, 30, pixels.shape), 0, 255).astype(np.uint8))
        exif = photo.getexif()
        exif[0x0112] = 6 if number == 0 else 1  # 6: turn 90 degrees to show
        photo.save(photos_dir / f"photo_{number}.jpg", exif=exif)
    photo.putalpha(Image.fromarray(np.tile(np.arange(160) < 80, (120, 1)).astype(np.uint8) * 255))
    photo.save(photos_dir / "transparent_right.png")  # transparent pixels are white, whatever colour they hide
    paths = sorted(str(path) for path in photos_dir.rglob("*.*"))
    result = subprocess.run([sys.executable, "app.py", *paths], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert [line.split("\t") for line in result.stdout.splitlines()] == predicted(
        folder, "FirstModel.int8.tflite", photos_dir)
    # The float file's probabilities tell a pixel apart, where the int8 file's steps may not: the same app on it.
    (tmp_path / f"{model_name}.int8.tflite").write_bytes((folder / "FirstModel.tflite").read_bytes())
    result = subprocess.run([sys.executable, "app.py", *paths], cwd=tmp_path, capture_output=True, text=True)
    assert [line.split("\t") for line in result.stdout.splitlines()] == predicted(
        folder, "FirstModel.tflite", photos_dir)


@pytest.mark.parametrize("script", ["SecondModel", "TransferModel"])
def test_each_keras_model_script_exports_its_model(script, tmp_path):
    """The float file gives the Keras model's probabilities, whatever the network: TransferModel's with its
    preprocessing layer inside the file. The models are as each script builds them, untrained; TransferModel's on
    a small stand-in base, as converting MobileNetV2 twice takes 20 s (docs/export.md measures it)."""
    module = importlib.import_module(script)
    if script == "TransferModel":
        base = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, activation="relu")], name="base")
        model = module.build_model(base, 3)
    else:
        model = module.build_model(32, 3)
    save_model(model, tmp_path / "model.h5", list(CLASSES), 1, settings={"script": script})
    result = run_in_process(f"{script}.py", "--train-dir", make_images(tmp_path / "train", CLASSES, seed=1),
                            "--validation-dir", make_images(tmp_path / "validation", {name: 4 for name in CLASSES},
                                                            seed=2),
                            "--model-file", tmp_path / "model.h5", "--export", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[3:]}
    assert rows["model.tflite"][1] == "100.0%" and float(rows["model.tflite"][2]) < 1e-4
    assert {path.name for path in tmp_path.glob("model.*")} == {
        "model.h5", "model.weights.h5", "model.last.h5", "model.last.weights.h5", "model.tflite",
        "model.int8.tflite", "model.labels.txt", "model.export.txt"}


def test_a_failed_write_replaces_no_earlier_file(exported, monkeypatch):
    """A full disk at the int8 file: the files of the earlier export stay as they were, nothing hidden is left."""
    folder, flags, _ = exported
    before = {path.name: path.read_bytes() for path in folder.glob("FirstModel.*")}
    write_bytes = training._write_bytes

    def full_disk(path, content):
        if path.endswith(".int8.tflite"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write_bytes(path, content)

    monkeypatch.setattr(training, "_write_bytes", full_disk)
    result = run_in_process("FirstModel.py", *flags, "--export", cwd=folder)
    assert_one_line_error(result, f"cannot write '{folder / 'FirstModel.int8.tflite'}' (No space left on device): "
                                  "nothing was replaced")
    assert {path.name: path.read_bytes() for path in folder.glob("FirstModel.*")} == before
    assert [path.name for path in folder.iterdir() if path.name.startswith(".")] == []


def test_an_unwritable_folder_fails_before_the_photos_are_read(exported, monkeypatch):
    folder, flags, _ = exported
    temporary_file = runs.tempfile.TemporaryFile

    def refused(dir=None):  # the model's folder refuses; the system's temporary folder does not
        if dir is None:
            return temporary_file()
        raise PermissionError(errno.EACCES, "Permission denied", dir)

    monkeypatch.setattr(runs.tempfile, "TemporaryFile", refused)
    result = run_in_process("FirstModel.py", *flags, "--export", cwd=folder)
    assert_one_line_error(result, f"cannot write '{folder / 'FirstModel.tflite'}' (Permission denied)")


def test_export_refuses_what_it_cannot_export(exported, tmp_path):
    folder, flags, _ = exported
    (tmp_path / "SVMModel.joblib").write_bytes(b"a pickle")
    for script, model_file, expected in [
        ("FirstModel.py", tmp_path / "missing.h5", f"no model '{tmp_path / 'missing.h5'}': train one first"),
        ("FirstModel.py", tmp_path / "SVMModel.joblib", "is not a Keras model: name the .h5 that FirstModel.py saved"),
        ("FirstModel.py", folder / "FirstModel.tflite", "is a LiteRT file, which only --predict uses"),
        ("TransferModel.py", folder / "FirstModel.h5", "was made by FirstModel.py, not TransferModel.py"),
    ]:
        result = run_in_process(script, *flags[:4], "--model-file", model_file, "--export", cwd=tmp_path)
        assert_one_line_error(result, expected)
    two_classes = [make_images(tmp_path / role, {"apple": 2, "berry": 2}, seed=4) for role in ("train", "validation")]
    result = run_in_process("FirstModel.py", "--train-dir", two_classes[0], "--validation-dir", two_classes[1],
                            "--model-file", folder / "FirstModel.h5", "--export", cwd=tmp_path)
    assert_one_line_error(result, "classifies ['apple', 'berry', 'cherry'], but", "holds ['apple', 'berry']")


def test_predict_refuses_a_broken_file_or_labels_and_training_refuses_a_litert_file(exported, tmp_path):
    folder, flags, _ = exported
    whole = (folder / "FirstModel.tflite").read_bytes()
    (tmp_path / "cut.tflite").write_bytes(whole[:len(whole) // 2])
    (tmp_path / "text.tflite").write_text("not a model")
    (tmp_path / "unlabelled.tflite").write_bytes(whole)
    (tmp_path / "short.tflite").write_bytes(whole)
    (tmp_path / "short.labels.txt").write_text("apple\nberry\n")
    for model_name, expected in [
        ("cut.tflite", "it is not a whole LiteRT model; export it again with --export"),
        ("text.tflite", "it is not a whole LiteRT model"),
        ("unlabelled.tflite", f"cannot read '{tmp_path / 'unlabelled.labels.txt'}', the class names of"),
        ("short.tflite", "names 2 classes, but"),
    ]:
        result = run_in_process("FirstModel.py", "--predict", folder / "validation", "--model-file",
                                tmp_path / model_name, cwd=tmp_path)
        assert_one_line_error(result, expected)
    for arguments in (["--initial-epoch", 4, "--epochs", 5], ["--check-labels"]):
        result = run_in_process("FirstModel.py", *flags[:4], "--model-file", folder / "FirstModel.tflite",
                                *arguments, cwd=tmp_path)
        assert_one_line_error(result, "is a LiteRT file, which only --predict uses: training, --initial-epoch")
