"""TransferModel.py end to end, offline: Keras' ImageNet weights stood in for by a file of their shapes.

The stand-in is loaded through the code a user's download takes: Keras' cache under a
KERAS_HOME of its own (read once, as Keras starts: in a fresh process), or --weights FILE.
"""

import os
import re
import shutil
import signal
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import keras_tools
from helpers import (FINAL_LINE, REPO, assert_one_line_error, logged_scalars, make_images, run_in_process,
                     saved_epoch, stderr_lines)

WEIGHTS_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"  # Keras' name for them
ADDRESS = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/" + WEIGHTS_FILE


@pytest.fixture(scope="module")
def keras_home(tmp_path_factory):
    """A Keras folder whose cache holds MobileNetV2's no-top weights file: its shapes and Keras'
    format, random values (the batch normalisation's variance set so that features neither
    vanish nor saturate: they then tell colours apart, as ImageNet's do)."""
    home = tmp_path_factory.mktemp("keras_home")
    (home / "models").mkdir()
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False, weights=None)
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_variance.assign(np.full(layer.moving_variance.shape, 0.1, "float32"))
    base.save(home / "models" / WEIGHTS_FILE)
    keras.backend.clear_session()
    return home


@pytest.fixture
def photos(tmp_path):
    """Three colours, 12 training and 4 validation images each."""
    counts = {"apple": 12, "berry": 12, "cherry": 12}
    return (make_images(tmp_path / "train", counts, seed=1),
            make_images(tmp_path / "validation", {name: 4 for name in counts}, seed=2))


def transfer(photos, tmp_path, *extra_args, constants=None):
    """TransferModel in this process, on the stand-in by --weights: 3 epochs of stage 1, then stage 2."""
    train_dir, validation_dir = photos
    return run_in_process(
        "TransferModel.py", "--train-dir", train_dir, "--validation-dir", validation_dir, "--image-size", 32,
        "--batch-size", 8, "--log-dir", tmp_path / "logs", "--model-file", tmp_path / "transfer.h5", *extra_args,
        cwd=tmp_path, constants={"FEATURE_EPOCHS": 3, "FEATURE_LEARNING_RATE": 0.1, **(constants or {})})


def run_fresh(*args, cwd, keras_home):
    """TransferModel.py in a new process, with Keras' folder at keras_home and no way out to the network."""
    env = dict(os.environ, KERAS_HOME=str(keras_home), https_proxy="http://127.0.0.1:9", no_proxy="")
    return subprocess.run([sys.executable, str(REPO / "TransferModel.py"), *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, env=env)


def optimizer_iterations(model_file):
    with h5py.File(model_file, "r") as saved:
        [optimizer] = saved["optimizer_weights"].values()  # "adam", or "adam_1" after stage 1's
        return int(optimizer["iteration"][()])


def test_both_stages_from_keras_cache_then_predict_in_a_fresh_process(keras_home, photos, tmp_path):
    train_dir, validation_dir = photos
    result = run_fresh("--train-dir", train_dir, "--validation-dir", validation_dir, "--epochs", 2,
                       "--image-size", 32, "--batch-size", 8, "--log-dir", tmp_path / "logs", cwd=tmp_path,
                       keras_home=keras_home)
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == []  # no download, no warning
    assert "MobileNetV2's features of 48 images in" in result.stdout and "Epoch 2/2" in result.stdout
    assert FINAL_LINE.match(result.stdout.strip().splitlines()[-1])
    assert "To classify photos with it: python" in result.stdout
    assert saved_epoch(tmp_path / "TransferModel.last.h5") == 2

    # The file alone classifies photos: in any Keras program, and by --predict in a new process.
    model = keras.models.load_model(tmp_path / "TransferModel.h5")
    predicted = run_fresh("--predict", validation_dir, cwd=tmp_path, keras_home=tmp_path / "no_keras_home")
    assert predicted.returncode == 0, predicted.stderr
    lines = [line.split("\t") for line in predicted.stdout.splitlines()]
    assert len(lines) == 12
    images, _ = keras_tools.image_files.read_images([path for path, _, _ in lines], 32)
    probabilities = model.predict(keras_tools.network_input(images), verbose=0)
    class_names = ["apple", "berry", "cherry"]
    assert [class_name for _, class_name, _ in lines] == [class_names[index] for index in probabilities.argmax(1)]
    assert np.allclose([float(probability) for _, _, probability in lines], probabilities.max(1), atol=1e-4)


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
    assert not list(tmp_path.glob("*.h5")) and not (empty_home / "models" / WEIGHTS_FILE).exists()


def test_weights_that_do_not_fit_are_one_line(photos, tmp_path):
    not_weights = tmp_path / "notes.h5"
    not_weights.write_text("not a weights file")
    other_shapes = tmp_path / "other.h5"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(other_shapes)
    train_dir, validation_dir = photos
    for weights in (not_weights, other_shapes):
        result = run_in_process("TransferModel.py", "--train-dir", train_dir, "--validation-dir", validation_dir,
                                "--weights", weights, cwd=tmp_path)
        assert_one_line_error(result, f"TransferModel.py: error: '{weights}' does not hold MobileNetV2's "
                                      "ImageNet weights without its top at this --image-size (")
    result = run_in_process("TransferModel.py", "--check-labels", "--train-dir", train_dir,
                            "--weights", tmp_path / "missing.h5", cwd=tmp_path)
    assert_one_line_error(result, f"--weights '{tmp_path / 'missing.h5'}' is not a file")
    assert not list(tmp_path.glob("transfer*"))


def test_stage_two_trains_the_last_block_with_batch_normalisation_frozen(keras_home, photos, tmp_path):
    weights = keras_home / "models" / WEIGHTS_FILE
    first = transfer(photos, tmp_path, "--weights", weights, "--epochs", 2)
    assert first.returncode == 0, first.stderr
    assert "Epoch 2/2" in first.stdout and saved_epoch(tmp_path / "transfer.last.h5") == 2

    # Resumed in stage 1: the features are computed again, and stage 2 follows.
    second = transfer(photos, tmp_path, "--weights", weights, "--initial-epoch", 2, "--epochs", 4)
    assert second.returncode == 0, second.stderr
    assert stderr_lines(second) == []
    assert "features of 48 images" in second.stdout
    assert "Epoch 3/3" in second.stdout and "Epoch 4/4" in second.stdout  # stage 1, then stage 2
    val_accuracy = float(FINAL_LINE.match(second.stdout.strip().splitlines()[-1]).group(4))
    assert val_accuracy > 0.5  # three classes: chance is a third
    # 36 training images at batch size 8: 5 steps in the one epoch of stage 2.
    assert optimizer_iterations(tmp_path / "transfer.last.h5") == 5
    started = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=str(weights))
    trained = keras.models.load_model(tmp_path / "transfer.last.h5").get_layer("base")
    changed = {layer.name for layer, before in zip(trained.layers, started.layers)
               if any(not np.array_equal(now, then) for now, then in zip(layer.get_weights(), before.get_weights()))}
    # The last block's convolutions; nothing else, not even its batch normalisation's statistics.
    assert changed == {"block_16_expand", "block_16_depthwise", "block_16_project", "Conv_1"}

    # Resumed in stage 2: no features, and the optimizer goes on.
    third = transfer(photos, tmp_path, "--weights", weights, "--initial-epoch", 4, "--epochs", 5)
    assert third.returncode == 0, third.stderr
    assert "Epoch 5/5" in third.stdout and "features of" not in third.stdout
    assert optimizer_iterations(tmp_path / "transfer.last.h5") == 10

    # One TensorBoard run each, the epochs numbered on from the run before.
    runs = sorted((tmp_path / "logs").iterdir())
    assert [sorted(logged_scalars(run / "validation")["epoch_accuracy"]) for run in runs] == [[0, 1], [2, 3], [4]]
    assert all(re.fullmatch(r"TransferModel-\d{8}-\d{6}(-\d+)?", run.name) for run in runs)
    events = EventAccumulator(str(runs[1]), size_guidance={"tensors": 0})
    events.Reload()
    assert {"_hparams_/session_start_info", "augmented_training_images", "confusion_matrix",
            "misclassified_validation_images", "classification_report"} <= set(events.Tags()["tensors"])
    settings = events.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    assert b"MobileNetV2" in settings and b"block_16_expand" in settings


def test_a_stop_in_stage_two_saves_stage_one_and_its_command_goes_on(keras_home, photos, tmp_path, monkeypatch):
    weights = keras_home / "models" / WEIGHTS_FILE
    batch_end = keras_tools.StopOnCtrlC.on_train_batch_end

    def ctrl_c_in_stage_two(self, batch, logs=None):
        if self.model.name != "classifier":
            signal.raise_signal(signal.SIGINT)
        batch_end(self, batch, logs)

    monkeypatch.setattr(keras_tools.StopOnCtrlC, "on_train_batch_end", ctrl_c_in_stage_two)
    result = transfer(photos, tmp_path, "--weights", weights, "--epochs", 5)
    assert result.returncode == 130
    [line] = [line for line in stderr_lines(result) if line.startswith("Interrupted")]
    assert line.startswith("Interrupted after epoch 3; saved ")
    partial_file = line.split("saved ")[1].split(",")[0]
    assert saved_epoch(partial_file.replace(".h5", ".last.h5")) == 3
    # Stage 2's optimizer is saved as it was before its first step: no step counted, no momentum.
    with h5py.File(partial_file.replace(".h5", ".last.h5"), "r") as saved:
        [optimizer] = saved["optimizer_weights"].values()
        assert all(not np.any(optimizer[name][()]) for name in optimizer if name != "learning_rate")
    monkeypatch.undo()
    go_on = line.split("To go on: ")[1].split()[2:]
    assert go_on[go_on.index("--initial-epoch") + 1] == "3"
    finished = run_in_process("TransferModel.py", *go_on, cwd=tmp_path,
                              constants={"FEATURE_EPOCHS": 3, "FEATURE_LEARNING_RATE": 0.1})
    assert finished.returncode == 0, finished.stderr
    assert "features of" not in finished.stdout and "Epoch 5/5" in finished.stdout
    assert saved_epoch(partial_file.replace(".h5", ".last.h5")) == 5
    assert optimizer_iterations(partial_file.replace(".h5", ".last.h5")) == 10  # 2 epochs of 5 steps


def test_check_labels_on_the_features_finds_planted_labels(keras_home, tmp_path, caplog):
    train_dir = make_images(tmp_path / "train", {"apple": 15, "berry": 15, "cherry": 15}, seed=1)
    planted = {}
    for number, (source, target) in enumerate([("apple", "berry"), ("berry", "cherry"), ("cherry", "apple")]):
        path = sorted((train_dir / source).iterdir())[number]
        shutil.move(path, train_dir / target / path.name)
        planted[str(train_dir / target / path.name)] = source
    result = run_in_process("TransferModel.py", "--check-labels", "--train-dir", train_dir, "--image-size", 32,
                            "--batch-size", 8, "--weights", keras_home / "models" / WEIGHTS_FILE, cwd=tmp_path,
                            constants={"FEATURE_LEARNING_RATE": 0.1})
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == []
    assert [record.getMessage() for record in caplog.records if record.levelname == "WARNING"] == []
    suspects = [line.split("\t") for line in result.stdout.splitlines() if "\t" in line]
    assert {row[0] for row in suspects[:3]} == set(planted)
    assert all(likely == planted[path] for path, _, _, likely in suspects[:3])


@pytest.mark.parametrize("backbone", ["MobileNetV2", "VGG16", "EfficientNetB0"])
def test_each_backbone_gets_its_own_preprocess_input(backbone, monkeypatch):
    import TransferModel

    monkeypatch.setattr(TransferModel, "BACKBONE", backbone)
    module, last_block = TransferModel.BACKBONES[backbone]
    base = getattr(keras.applications, backbone)(input_shape=(32, 32, 3), include_top=False, weights=None,
                                                name="base")
    model = TransferModel.build_model(base, 3)
    assert base.get_layer(last_block)  # the block stage 2 trains is the backbone's
    # What the base receives from network_input's pixels is the backbone's preprocess_input of 0-255 pixels.
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3)).astype("uint8")
    assert [layer.name for layer in model.layers[1:3]] == ["preprocess_input", "base"]  # a chain
    received = keras.Model(model.inputs, model.get_layer("preprocess_input").output)(
        keras_tools.network_input(pixels))
    expected = getattr(keras.applications, module).preprocess_input(pixels.astype("float32"))
    assert np.allclose(received, expected, atol=1e-3)
    keras.backend.clear_session()
