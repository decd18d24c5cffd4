"""Images read once into memory, and augmented there, as flow_from_directory and ImageDataGenerator did."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow.keras.preprocessing.image import ImageDataGenerator

import photos
import training
from helpers import make_images


def test_same_classes_labels_and_files_as_flow_from_directory(tmp_path):
    data_dir = make_images(tmp_path / "train", {"zebra": 3, "ant": 5, "Moth": 2})
    make_images(tmp_path / "nested", {"2019": 2})
    (tmp_path / "nested" / "2019").rename(data_dir / "ant" / "2019")

    names = photos.class_folder_names(data_dir, "training")
    images, labels, paths = photos.read_image_folder(data_dir, names, 32, "training")

    flow = ImageDataGenerator().flow_from_directory(data_dir, target_size=(32, 32), shuffle=False)
    assert names == sorted(flow.class_indices, key=flow.class_indices.get)
    assert labels.tolist() == flow.classes.tolist()
    assert [str(path.relative_to(data_dir)) for path in map(type(tmp_path), paths)] == flow.filenames
    assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8


def test_hidden_files_and_folders_are_not_images(tmp_path):
    data_dir = make_images(tmp_path / "train", {"a": 2})
    (data_dir / "a" / "._a_000.png").write_bytes(b"macOS resource fork")
    (data_dir / "a" / ".thumbnails").mkdir()
    Image.new("RGB", (8, 8)).save(data_dir / "a" / ".thumbnails" / "small.png")
    (data_dir / "a" / "notes.txt").write_text("not an image")
    assert photos.list_images(data_dir / "a") == ["a_000.png", "a_001.jpg"]


def test_large_photo_is_decoded_small_and_downscaled_without_aliasing(tmp_path):
    # One-pixel black and white stripes: an antialiased downscale is an even grey, where
    # nearest-neighbour picks whole black or white lines.
    stripes = np.zeros((3024, 4032, 3), dtype=np.uint8)
    stripes[:, ::2] = 255
    Image.fromarray(stripes).save(tmp_path / "stripes.jpg", quality=95)
    Image.fromarray(stripes).save(tmp_path / "stripes.png")

    for name in ("stripes.jpg", "stripes.png"):
        image = photos.read_image(tmp_path / name, 150)
        assert image.shape == (150, 150, 3) and image.dtype == np.uint8
        assert abs(image.mean() - 127.5) < 12, name
        assert image.std() < 20, name


def test_large_photo_keeps_its_picture(tmp_path):
    # Left half red, right half blue, at 12 megapixels.
    photo = np.zeros((3024, 4032, 3), dtype=np.uint8)
    photo[:, :2016] = (200, 30, 30)
    photo[:, 2016:] = (30, 30, 200)
    Image.fromarray(photo).save(tmp_path / "photo.jpg", quality=90)
    image = photos.read_image(tmp_path / "photo.jpg", 150).astype(int)
    assert np.abs(image[:, :70] - (200, 30, 30)).max() < 12
    assert np.abs(image[:, 80:] - (30, 30, 200)).max() < 12


def random_images(count, size=48, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, size=(count, size, size, 3))
    # Smooth them a little, so that bilinear interpolation has something to interpolate.
    return tf.nn.avg_pool2d(tf.constant(pixels, tf.float32), 3, 1, "SAME").numpy()


@pytest.mark.parametrize("fill_mode", ["nearest", "reflect", "constant"])
def test_affine_transform_matches_image_data_generator(fill_mode):
    images = random_images(4)
    parameters = [dict(theta=30.0, tx=5.0, ty=-3.0, shear=10.0, zx=0.85, zy=1.1),
                  dict(theta=-12.0, tx=0.0, ty=7.5, shear=-15.0, zx=1.2, zy=0.9),
                  dict(theta=0.0, tx=0.0, ty=0.0, shear=0.0, zx=1.0, zy=1.0),
                  dict(theta=40.0, tx=-9.0, ty=9.0, shear=0.0, zx=0.8, zy=0.8)]
    generator = ImageDataGenerator(fill_mode=fill_mode, cval=50.0)
    expected = np.stack([generator.apply_transform(image, transform)
                         for image, transform in zip(images, parameters)])

    def column(key):
        return tf.constant([transform[key] for transform in parameters], tf.float32)

    transforms = training.affine_transforms(
        48, column("theta"), column("tx"), column("ty"), column("shear"), column("zx"), column("zy"))
    transformed = tf.keras.ops.image.affine_transform(
        images, transforms, interpolation="bilinear", fill_mode=fill_mode, fill_value=50.0)
    difference = np.abs(np.asarray(transformed) - expected).max(axis=-1)
    if fill_mode == "constant":
        # Only on the one-pixel edge between picture and fill, which the two blend differently.
        assert (difference > 1.0).mean() < 0.05
    else:
        # Away from the border, where the fill conventions differ by half a pixel.
        assert difference[:, 2:-2, 2:-2].max() < 1.0


def test_augment_draws_within_the_generator_ranges():
    images = random_images(64)
    flips_only = ImageDataGenerator(horizontal_flip=True)
    flipped = training.augment(images, flips_only, tf.constant([1, 2])).numpy()
    is_flipped = [np.allclose(out, image[:, ::-1], atol=1e-3) for out, image in zip(flipped, images)]
    unchanged = [np.allclose(out, image, atol=1e-3) for out, image in zip(flipped, images)]
    assert all(a or b for a, b in zip(is_flipped, unchanged))
    assert 16 < sum(is_flipped) < 48

    nothing = ImageDataGenerator()
    assert np.allclose(training.augment(images, nothing, tf.constant([1, 2])), images, atol=1e-3)

    shear_and_zoom = ImageDataGenerator(shear_range=0.2, zoom_range=0.2)
    first = training.augment(images, shear_and_zoom, tf.constant([3, 4])).numpy()
    again = training.augment(images, shear_and_zoom, tf.constant([3, 4])).numpy()
    other = training.augment(images, shear_and_zoom, tf.constant([5, 6])).numpy()
    assert np.array_equal(first, again)
    assert not np.allclose(first, other)
    assert first.min() >= 0 and first.max() <= 255


def test_every_training_image_once_per_epoch_and_repeatable():
    images = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 8, 8, 3), np.uint8)
    labels = np.array([0] * 6 + [1] * 4)

    def epochs(seed):
        batches = training.training_batches(images, labels, 2, batch_size=3, seed=seed)
        return [np.concatenate([x.numpy()[:, 0, 0, 0] for x, _ in batches]) for _ in range(2)]

    # Keras reads the number of batches from the dataset to end each epoch.
    assert training.training_batches(images, labels, 2, 3, seed=7).cardinality() == 4
    first, second = epochs(seed=7)
    for epoch in (first, second):
        assert sorted(np.round(epoch * 255).astype(int)) == list(range(10))
    assert not np.array_equal(first, second)
    assert all(np.array_equal(a, b) for a, b in zip(epochs(seed=7), (first, second)))

    validation = training.validation_batches(images, labels, 2, batch_size=4)
    order = np.concatenate([x.numpy()[:, 0, 0, 0] for x, _ in validation])
    assert np.round(order * 255).astype(int).tolist() == list(range(10))
    one_hot = np.concatenate([y.numpy() for _, y in validation])
    assert one_hot.argmax(axis=1).tolist() == labels.tolist()
