"""SecondModel.py end to end: class weights, saving and resuming."""

import re

import keras

from helpers import (FINAL_LINE, assert_one_line_error, logged_scalars, optimizer_iterations, reload_and_predict,
                     run_in_process, save_model, stderr_lines)


def train_second_model(dataset, tmp_path, *extra_args):
    train_dir, validation_dir = dataset
    return run_in_process(
        "SecondModel.py", "--train-dir", train_dir, "--validation-dir", validation_dir,
        "--batch-size", 4, "--image-size", 32, "--log-dir", tmp_path / "logs",
        "--model-file", tmp_path / "second.h5", *extra_args, cwd=tmp_path)


def test_class_weights_training_and_resume(small_dataset, tmp_path):
    first = train_second_model(small_dataset, tmp_path, "--epochs", 1)
    assert first.returncode == 0, first.stderr
    assert stderr_lines(first) == []
    # 8 apples and 4 berries: weight = largest class count / class count.
    assert "Class weights: apple 1.000, berry 2.000" in first.stdout
    assert FINAL_LINE.match(first.stdout.strip().splitlines()[-1])
    assert (tmp_path / "second.weights.h5").is_file()
    assert reload_and_predict(tmp_path / "second.h5", 32, 5) == (5, 2)
    # 12 training images at batch size 4: 3 steps an epoch.
    assert optimizer_iterations(tmp_path / "second.last.h5") == 3

    resumed = train_second_model(small_dataset, tmp_path, "--initial-epoch", 1, "--epochs", 3)
    assert resumed.returncode == 0, resumed.stderr
    assert stderr_lines(resumed) == []
    assert "Resuming" in resumed.stdout
    assert "Epoch 1/3" not in resumed.stdout
    assert "Epoch 2/3" in resumed.stdout and "Epoch 3/3" in resumed.stdout
    # The optimizer's state went on from the saved model: 3 epochs of 3 steps in all.
    assert optimizer_iterations(tmp_path / "second.last.h5") == 9

    runs = sorted((tmp_path / "logs").iterdir())
    assert len(runs) == 2 and all(re.fullmatch(r"SecondModel-\d{8}-\d{6}", run.name) for run in runs)
    resumed_epochs = logged_scalars(runs[-1] / "validation")["epoch_accuracy"]
    assert sorted(resumed_epochs) == [1, 2]


def test_resume_without_saved_model_is_a_clear_error(small_dataset, tmp_path):
    result = train_second_model(small_dataset, tmp_path, "--initial-epoch", 2, "--epochs", 4)
    assert result.returncode != 0
    assert stderr_lines(result) == [
        f"SecondModel.py: error: cannot resume: model file '{tmp_path / 'second.last.h5'}' does not exist; "
        "train from the start (--initial-epoch 0) or name the saved model with --model-file"]


def test_epochs_must_be_above_initial_epoch(small_dataset, tmp_path):
    result = train_second_model(small_dataset, tmp_path, "--initial-epoch", 5, "--epochs", 5)
    assert result.returncode != 0
    [line] = stderr_lines(result)
    assert "--epochs 5 must be above --initial-epoch 5" in line


def test_initial_epoch_must_match_the_saved_model(small_dataset, tmp_path):
    model = keras.Sequential([keras.Input(shape=(32, 32, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(2)])
    save_model(model, tmp_path / "second.h5", ["apple", "berry"], 4)
    result = train_second_model(small_dataset, tmp_path, "--initial-epoch", 3, "--epochs", 6)
    assert_one_line_error(result, f"cannot resume '{tmp_path / 'second.h5'}' after epoch 3: "
                                  f"'{tmp_path / 'second.last.h5'}' holds the model after epoch 4; "
                                  "use --initial-epoch 4")
    assert "Epoch" not in result.stdout


def test_going_on_with_another_script_classes_or_image_size_is_a_clear_error(small_dataset, tmp_path):
    """A finished model goes on with other hyperparameters, not as another script's, on other classes, at another
    image size (it would train a network on what it was not made for)."""
    model = keras.Sequential([keras.Input(shape=(32, 32, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adadelta", loss="categorical_crossentropy")
    settings = {"script": "FirstModel", "classes": "apple, berry", "image_size": 32, "validation_split": 0.0}
    save_model(model, tmp_path / "second.h5", ["apple", "berry"], 4, settings=settings)
    result = train_second_model(small_dataset, tmp_path, "--initial-epoch", 4, "--epochs", 6)
    assert_one_line_error(result, f"cannot resume '{tmp_path / 'second.last.h5'}': it was made by FirstModel.py, not "
                                  "SecondModel.py; resume it with python FirstModel.py, or name another with "
                                  "--model-file")
    save_model(model, tmp_path / "second.h5", ["apple", "berry"], 4, settings={**settings, "script": "SecondModel"})
    result = train_second_model(small_dataset, tmp_path, "--initial-epoch", 4, "--epochs", 6, "--image-size", 40)
    assert_one_line_error(result, f"cannot resume '{tmp_path / 'second.last.h5'}': it was trained with other "
                                  "settings (image_size 32 then, 40 now); resume it with its own, or name another "
                                  "with --model-file")
    for folder in small_dataset:
        (folder / "berry").rename(folder / "cherry")
    result = train_second_model(small_dataset, tmp_path, "--initial-epoch", 4, "--epochs", 6)
    assert_one_line_error(result, "(classes 'apple, berry' then, 'apple, cherry' now)")
    assert "Epoch" not in result.stdout
