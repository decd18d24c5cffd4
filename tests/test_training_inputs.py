"""What fit is given, not what is logged: FirstModel's batches are augmented as AUGMENTATION says,
SecondModel's are the photos as they are, with its class weights."""

import keras
import numpy as np
import pytest

import photos
from helpers import make_images, run_in_process


@pytest.fixture
def fit_calls(monkeypatch):
    """Every call of Model.fit in the test, its arguments kept: [(x, keyword arguments)]."""
    calls, fit = [], keras.Model.fit

    def recorded_fit(model, x=None, *args, **options):
        calls.append((x, options))
        return fit(model, x, *args, **options)

    monkeypatch.setattr(keras.Model, "fit", recorded_fit)
    return calls


@pytest.fixture
def read_photos(tmp_path):
    train_dir = make_images(tmp_path / "train", {"apple": 6, "berry": 3}, seed=1)
    validation_dir = make_images(tmp_path / "validation", {"apple": 2, "berry": 2}, seed=2)
    class_names = ["apple", "berry"]
    originals, labels, _ = photos.read_image_folder(train_dir, class_names, 32, "training")
    return train_dir, validation_dir, originals.astype(np.float32) / 255, labels


def train(script, read_photos, tmp_path, constants=None):
    train_dir, validation_dir, _, _ = read_photos
    result = run_in_process(script, "--train-dir", train_dir, "--validation-dir", validation_dir, "--epochs", 1,
                            "--batch-size", 3, "--image-size", 32, "--log-dir", tmp_path / "logs",
                            "--model-file", tmp_path / "model.h5", cwd=tmp_path, constants=constants)
    assert result.returncode == 0, result.stderr


def batch_images(batches):
    """The images of one pass over the batches fit was given, and their labels."""
    images, labels = zip(*[(x.numpy(), y.numpy().argmax(axis=1)) for x, y in batches])
    return np.concatenate(images), np.concatenate(labels)


def closest(image, candidates):
    """The largest pixel difference between image and the nearest of candidates."""
    return np.abs(candidates - image).max(axis=(1, 2, 3)).min()


def test_first_model_trains_on_the_augmentation_its_constant_says(read_photos, tmp_path, fit_calls):
    train("FirstModel.py", read_photos, tmp_path, constants={"AUGMENTATION": dict(horizontal_flip=True)})
    [(batches, _)] = fit_calls
    _, _, originals, _ = read_photos
    images, _ = batch_images(batches.repeat(4))
    # Flips only: each image is a photo as it is or mirrored, and both are seen.
    as_they_are = [closest(image, originals) < 1e-6 for image in images]
    mirrored = [closest(image, originals[:, :, ::-1]) < 1e-6 for image in images]
    assert all(a or m for a, m in zip(as_they_are, mirrored))
    assert any(as_they_are) and any(mirrored[index] and not as_they_are[index] for index in range(len(images)))


def test_second_model_trains_on_the_photos_as_they_are_with_its_class_weights(read_photos, tmp_path, fit_calls):
    train("SecondModel.py", read_photos, tmp_path)
    [(batches, options)] = fit_calls
    _, _, originals, labels = read_photos
    images, _ = batch_images(batches)
    assert all(closest(image, originals) < 1e-6 for image in images)
    # 6 apples and 3 berries: a berry weighs twice what an apple does.
    assert options["class_weight"] == {0: 1.0, 1: 2.0}
