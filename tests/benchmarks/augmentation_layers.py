"""FirstModel's augmentation as the scripts run it (training.training_batches: ImageDataGenerator's transforms as
TensorFlow ops, a chunk of images at a time) against Keras' preprocessing layers doing the same kinds of transform
(RandomRotation, RandomTranslation, RandomShear, RandomZoom, RandomFlip) in the same tf.data pipeline: seconds an
epoch of the bundled training set, batches drawn and thrown away. A measurement, not a test: it prints figures.

    python tests/benchmarks/augmentation_layers.py
"""

import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import runs  # noqa: E402

runs.start("augmentation_layers.py")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import FirstModel  # noqa: E402
import photos  # noqa: E402
import training  # noqa: E402


def keras_layers_batches(images, labels, num_classes, batch_size, seed):
    """The same epoch as training.training_batches, its transforms by Keras' layers, a chunk at a time."""
    augmentation = FirstModel.AUGMENTATION
    layers = keras.Sequential([
        keras.layers.RandomRotation(augmentation["rotation_range"] / 360, seed=seed),
        keras.layers.RandomTranslation(augmentation["height_shift_range"], augmentation["width_shift_range"], seed=seed),
        keras.layers.RandomShear(x_factor=0.05, seed=seed),  # its own measure of shear: the cost is compared
        keras.layers.RandomZoom(augmentation["zoom_range"], seed=seed),
        keras.layers.RandomFlip("horizontal", seed=seed)])
    images, labels = tf.constant(images), tf.one_hot(labels, num_classes)
    chunks = tf.data.Dataset.range(len(images)).shuffle(len(images), seed=seed).batch(training.AUGMENTATION_CHUNK).map(
        lambda batch: (layers(tf.cast(tf.gather(images, batch), tf.float32), training=True), tf.gather(labels, batch)))
    return chunks.map(lambda x, y: (x / 255.0, y)).unbatch().batch(batch_size).prefetch(tf.data.AUTOTUNE)


def epoch_seconds(batches, epochs=5):
    """Median seconds of an epoch, after a first that traces."""
    times = []
    for _ in range(epochs + 1):
        started = time.perf_counter()
        for _ in batches:
            pass
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def main():
    class_names = photos.class_folder_names(str(REPO / "data" / "train"), "training")
    images, labels, _ = photos.read_image_folder(str(REPO / "data" / "train"), class_names, FirstModel.IMAGE_SIZE,
                                                 "training")
    print(f"{len(images)} images of {FirstModel.IMAGE_SIZE} pixels, batch size {FirstModel.BATCH_SIZE}, "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or 'all'} threads")
    for name, batches in (
            ("the scripts' (ImageDataGenerator's transforms)", training.training_batches(
                images, labels, len(class_names), FirstModel.BATCH_SIZE, 1, FirstModel.AUGMENTATION)),
            ("Keras' preprocessing layers", keras_layers_batches(images, labels, len(class_names),
                                                                 FirstModel.BATCH_SIZE, 1))):
        print(f"{name}: {epoch_seconds(batches):.2f} s an epoch", flush=True)


if __name__ == "__main__":
    main()
