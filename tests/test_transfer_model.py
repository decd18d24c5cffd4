"""TransferModel.py offline: where its weights come from, what it refuses, a model trained in one
process resumed and used by --predict in another, --check-labels and each backbone's
preprocessing. Its stages, stopped and going on, and what stage 2 trains, are in test_checkpoints.py.

Keras' ImageNet weights are stood in for by a file of their shapes (the keras_home fixture),
loaded through the code a user's download takes: Keras' cache under a KERAS_HOME of its own
(read once, as Keras starts: in a new process), or --weights FILE.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import keras
import numpy as np
import pytest

import photos
import runs
import training
from helpers import (FINAL_LINE, MOBILENET_WEIGHTS, REPO, assert_one_line_error, logged_scalars, make_images,
                     run_in_process, saved_epoch, stderr_lines)

ADDRESS = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/" + MOBILENET_WEIGHTS


def run_fresh(*args, cwd, keras_home):
    """TransferModel.py in a new process, with Keras' folder at keras_home and no way out to the network."""
    env = dict(os.environ, KERAS_HOME=str(keras_home), https_proxy="http://127.0.0.1:9", no_proxy="")
    return subprocess.run([sys.executable, str(REPO / "TransferModel.py"), *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, env=env)


def test_a_run_from_keras_cache_goes_on_and_classifies_in_another_process(keras_home, colours, tmp_path):
    """Trained in a new process from Keras' cache; its file resumed, and read by --predict, in this one."""
    train_dir, validation_dir = colours
    result = run_fresh("--train-dir", train_dir, "--validation-dir", validation_dir, "--epochs", 1,
                       "--image-size", 32, "--batch-size", 8, "--log-dir", tmp_path / "logs", cwd=tmp_path,
                       keras_home=keras_home)
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == []  # no download, no warning
    assert "MobileNetV2's features of 48 images in" in result.stdout
    assert FINAL_LINE.match(result.stdout.strip().splitlines()[-1])
    assert "To classify photos with it: python" in result.stdout
    assert saved_epoch(tmp_path / "TransferModel.last.h5") == 1

    # The file alone classifies colours: in any Keras program, and by --predict.
    model = keras.models.load_model(tmp_path / "TransferModel.h5")
    predicted = run_in_process("TransferModel.py", "--predict", validation_dir, cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    lines = [line.split("\t") for line in predicted.stdout.splitlines()]
    assert len(lines) == 12
    images, _ = photos.read_images([path for path, _, _ in lines], 32)
    probabilities = model.predict(training.network_input(images), verbose=0)
    class_names = ["apple", "berry", "cherry"]
    assert [class_name for _, class_name, _ in lines] == [class_names[index] for index in probabilities.argmax(1)]
    assert np.allclose([float(probability) for _, _, probability in lines], probabilities.max(1), atol=1e-4)

    # Resumed in stage 1, without the weights file (the model holds them): the features are computed again.
    resumed = run_in_process("TransferModel.py", "--train-dir", train_dir, "--validation-dir", validation_dir,
                             "--image-size", 32, "--batch-size", 8, "--log-dir", tmp_path / "logs",
                             "--initial-epoch", 1, "--epochs", 2, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming" in resumed.stdout and "features of 48 images" in resumed.stdout
    assert "Epoch 1/2" not in resumed.stdout and "Epoch 2/2" in resumed.stdout
    assert saved_epoch(tmp_path / "TransferModel.last.h5") == 2
    runs = sorted((tmp_path / "logs").iterdir())
    assert [sorted(logged_scalars(run / "validation")["epoch_accuracy"]) for run in runs] == [[0], [1]]


def test_offline_the_first_run_names_the_file_its_address_and_the_folder(tmp_path):
    make_images(tmp_path / "data" / "train", {"apple": 2, "berry": 2})
    make_images(tmp_path / "data" / "validation", {"apple": 1, "berry": 1})
    empty_home = tmp_path / "keras"
    result = run_fresh(cwd=tmp_path, keras_home=empty_home)
    lines = stderr_lines(result)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert lines[-1].startswith("TransferModel.py: error: cannot download MobileNetV2's ImageNet weights (")
    assert (f"fetch {ADDRESS} on a machine with internet access and put it in '{empty_home / 'models'}', "
            "or name a copy with --weights FILE") in lines[-1]
    assert len(lines) == 1 and f"Downloading data from {ADDRESS}" in result.stdout  # Keras says so first
    assert not list(tmp_path.glob("*.h5")) and not (empty_home / "models" / MOBILENET_WEIGHTS).exists()

    # A download cut short where the line said, for another --image-size: Keras reads it (it checks no hash for
    # this file), and the line names the very file to delete.
    cut_short = empty_home / "models" / MOBILENET_WEIGHTS.replace("_224_", "_160_")
    cut_short.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(1000))
    result = run_fresh("--image-size", 160, cwd=tmp_path, keras_home=empty_home)
    assert_one_line_error(result, f"TransferModel.py: error: '{cut_short}' does not hold MobileNetV2's ImageNet "
                                  "weights without its top at this --image-size (", "): delete it (Keras downloads "
                                  "it again) or put a whole copy in its place; or name another file with --weights")


def test_the_cache_named_is_the_folder_keras_reads(monkeypatch, tmp_path):
    """KERAS_HOME set but empty (a variable that expanded to nothing), a home that cannot be written: Keras falls
    back on the temporary folder, and so does the line that tells where to put the file."""
    import TransferModel
    temporary = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras", "models")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert TransferModel.keras_cache() == str(tmp_path / "models")
    monkeypatch.setenv("KERAS_HOME", "")
    assert TransferModel.keras_cache() == temporary
    monkeypatch.delenv("KERAS_HOME")
    for variable in ("HOME", "USERPROFILE"):  # not there: not writable
        monkeypatch.setenv(variable, str(tmp_path / "home"))
    assert TransferModel.keras_cache() == temporary
    assert TransferModel.weights_file_name(160) == MOBILENET_WEIGHTS.replace("_224_", "_160_")
    assert TransferModel.weights_file_name(32) == MOBILENET_WEIGHTS

    # KERAS_HOME naming a file: Keras cannot make its folder there, and the line says so, not "delete the file".
    (tmp_path / "a file").write_text("")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "a file"))

    def keras_folder_in_a_file(**kwargs):
        raise NotADirectoryError(20, "Not a directory", str(tmp_path / "a file" / "models"))

    monkeypatch.setattr(keras.applications, "MobileNetV2", keras_folder_in_a_file)
    with pytest.raises(runs.DataError) as refused:
        TransferModel.load_base(224, None)
    assert str(refused.value) == (f"cannot keep MobileNetV2's ImageNet weights in '{tmp_path / 'a file' / 'models'}' "
                                  "(Not a directory): set KERAS_HOME to a folder you can write, or name a copy with "
                                  "--weights FILE")


def test_weights_that_do_not_fit_are_one_line(colours, tmp_path):
    not_weights = tmp_path / "notes.h5"
    not_weights.write_text("not a weights file")
    other_shapes = tmp_path / "other.h5"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(other_shapes)
    train_dir, validation_dir = colours
    for weights in (not_weights, other_shapes):
        result = run_in_process("TransferModel.py", "--train-dir", train_dir, "--validation-dir", validation_dir,
                                "--weights", weights, cwd=tmp_path)
        assert_one_line_error(result, f"TransferModel.py: error: '{weights}' does not hold MobileNetV2's "
                                      "ImageNet weights without its top at this --image-size (")
    result = run_in_process("TransferModel.py", "--check-labels", "--train-dir", train_dir,
                            "--weights", tmp_path / "missing.h5", cwd=tmp_path)
    assert_one_line_error(result, f"--weights '{tmp_path / 'missing.h5'}' is not a file")
    assert not list(tmp_path.glob("transfer*"))


def test_check_labels_on_the_features_finds_planted_labels(keras_home, tmp_path, monkeypatch):
    train_dir = make_images(tmp_path / "train", {"apple": 15, "berry": 15, "cherry": 15}, seed=1)
    planted = {}
    for number, (source, target) in enumerate([("apple", "berry"), ("berry", "cherry"), ("cherry", "apple")]):
        path = sorted((train_dir / source).iterdir())[number]
        shutil.move(path, train_dir / target / path.name)
        planted[str(train_dir / target / path.name)] = source
    # predict() once, for the features: called for each fold's new classifier, it traces a new
    # function each time, and TensorFlow prints a warning about it on stderr.
    predict_calls, predict = [], keras.Model.predict
    monkeypatch.setattr(keras.Model, "predict", lambda *args, **kwargs: predict_calls.append(1) or predict(
        *args, **kwargs))
    result = run_in_process("TransferModel.py", "--check-labels", "--train-dir", train_dir, "--image-size", 32,
                            "--batch-size", 8, "--weights", keras_home / "models" / MOBILENET_WEIGHTS, cwd=tmp_path,
                            constants={"FEATURE_EPOCHS": 10, "FEATURE_LEARNING_RATE": 0.1})
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == []
    assert len(predict_calls) == 1
    suspects = [line.split("\t") for line in result.stdout.splitlines() if "\t" in line]
    assert {row[0] for row in suspects[:3]} == set(planted)
    assert all(likely == planted[path] for path, _, _, likely in suspects[:3])


@pytest.mark.parametrize("backbone", ["MobileNetV2", "VGG16", "EfficientNetB0"])
def test_each_backbone_gets_its_own_preprocess_input(backbone, monkeypatch):
    import TransferModel

    monkeypatch.setattr(TransferModel, "BACKBONE", backbone)
    module, last_block, _ = TransferModel.BACKBONES[backbone]
    base = getattr(keras.applications, backbone)(input_shape=(32, 32, 3), include_top=False, weights=None,
                                                 name="base")
    model = TransferModel.build_model(base, 3)
    assert base.get_layer(last_block)  # the block stage 2 trains is the backbone's
    # What the base receives from network_input's pixels is the backbone's preprocess_input of 0-255 pixels.
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3)).astype("uint8")
    assert [layer.name for layer in model.layers[1:3]] == ["preprocess_input", "base"]  # a chain
    received = keras.Model(model.inputs, model.get_layer("preprocess_input").output)(
        training.network_input(pixels))
    expected = getattr(keras.applications, module).preprocess_input(pixels.astype("float32"))
    assert np.allclose(received, expected, atol=1e-3)
    keras.backend.clear_session()
