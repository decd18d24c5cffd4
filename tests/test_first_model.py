"""FirstModel.py end to end on a tiny data set made in the test."""

import re

import keras
import numpy as np

import FirstModel
from helpers import FINAL_LINE, logged_scalars, reload_and_predict, run_in_process, save_model, stderr_lines


def test_trains_saves_logs_and_learns(small_dataset, tmp_path):
    train_dir, validation_dir = small_dataset
    (tmp_path / "models").mkdir()
    result = run_in_process(
        "FirstModel.py", "--train-dir", train_dir, "--validation-dir", validation_dir,
        "--epochs", 3, "--batch-size", 2, "--image-size", 32, "--log-dir", tmp_path / "logs",
        "--model-file", tmp_path / "models" / "first.h5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # Nothing on stderr (a process's own start, TensorFlow's lines hidden, is in test_checkpoints.py).
    assert stderr_lines(result) == []

    # Every training image once per epoch: 12 images at batch size 2 are 6 steps.
    assert "6/6" in result.stdout
    final = FINAL_LINE.match(result.stdout.strip().splitlines()[-1])
    assert final, result.stdout
    # Two classes of different colours: better than chance after 3 epochs.
    assert float(final.group(4)) > 0.5

    assert (tmp_path / "models" / "first.h5").is_file()
    assert (tmp_path / "models" / "first.weights.h5").is_file()
    assert reload_and_predict(tmp_path / "models" / "first.h5", 32, 3) == (3, 2)

    runs = list((tmp_path / "logs").iterdir())
    assert len(runs) == 1 and re.fullmatch(r"FirstModel-\d{8}-\d{6}", runs[0].name)
    train_scalars = logged_scalars(runs[0] / "train")
    validation_scalars = logged_scalars(runs[0] / "validation")
    assert sorted(train_scalars["epoch_accuracy"]) == [0, 1, 2]
    assert sorted(validation_scalars["epoch_accuracy"]) == [0, 1, 2]
    # The last line is the epoch kept: the one of highest val_accuracy.
    assert max(validation_scalars["epoch_accuracy"].values()) == float(final.group(4))


def test_resumes_the_saved_model_not_a_new_one(small_dataset, tmp_path):
    """A model whose weights are all zero stays so when trained: a ReLU network with no signal
    has no gradient but for the last bias. A resumed run that built a new model would not."""
    train_dir, validation_dir = small_dataset
    model = FirstModel.build_model(32, 2)
    FirstModel.compile_model(model)
    model.set_weights([np.zeros_like(weights) for weights in model.get_weights()])
    save_model(model, tmp_path / "zero.h5", ["apple", "berry"], 1, settings={
        "script": "FirstModel", "classes": "apple, berry", "image_size": 32, "validation_split": 0.0})

    result = run_in_process("FirstModel.py", "--train-dir", train_dir, "--validation-dir", validation_dir,
                            "--initial-epoch", 1, "--epochs", 2, "--batch-size", 2, "--image-size", 32,
                            "--log-dir", tmp_path / "logs", "--model-file", tmp_path / "zero.h5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Epoch 2/2" in result.stdout and "Epoch 1/2" not in result.stdout
    resumed = keras.models.load_model(tmp_path / "zero.h5", compile=False)
    kernels = [layer.kernel.numpy() for layer in resumed.layers if hasattr(layer, "kernel")]
    assert len(kernels) == 5 and not any(kernel.any() for kernel in kernels)
