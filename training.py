"""The networks' side of the scripts: a run's settings checked, photos in batches augmented in memory, the epoch kept,
the run's state on disk after every epoch, the model files, and photos classified by a saved model.

Model files: <name>.h5, the epoch kept (BestEpoch), and <name>.last.h5, the last epoch, which --initial-epoch goes on
from; each with its weights (and optimizer state) beside it, <name>.weights.h5, and its class names, epoch and metrics.
While a run trains, <name>.checkpoint.weights.h5 holds its state after its last complete epoch.
"""

import json
import math
import os
import time

import h5py
import keras
import numpy as np
import tensorflow as tf
from sklearn.model_selection import StratifiedKFold
from tensorflow.keras.preprocessing.image import ImageDataGenerator

import photos
import runs
from runs import DataError

# Training images are shuffled, augmented and rescaled this many at a time, then batched.
AUGMENTATION_CHUNK = 64


def check_training_settings(epochs, initial_epoch, batch_size, image_size, augmentation, smallest_image=22):
    """Before anything slow starts. augmentation: ImageDataGenerator's keyword arguments, as the scripts state them;
    smallest_image: three 3x3 convolutions, each followed by 2x2 pooling, need 22 pixels; keras.applications' 32."""
    for flag, value in (("--epochs", epochs), ("--batch-size", batch_size)):
        if value < 1:
            raise DataError(f"{flag} {value} must be 1 or more")
    if initial_epoch < 0:
        raise DataError(f"--initial-epoch {initial_epoch} must be 0 (a new model) or more")
    if epochs <= initial_epoch:
        raise DataError(f"--epochs {epochs} must be above --initial-epoch {initial_epoch}: --epochs is the epoch to "
                        "stop after, not the number of epochs to add")
    if image_size < smallest_image:
        raise DataError(f"--image-size {image_size} is too small: the network needs {smallest_image} pixels or more")
    # Named as the user wrote them, before the generator turns zca_whitening on featurewise_center.
    for setting in ("featurewise_center", "samplewise_center", "featurewise_std_normalization",
                    "samplewise_std_normalization", "zca_whitening", "channel_shift_range", "preprocessing_function",
                    "rescale"):
        if augmentation.get(setting):
            raise DataError(f"AUGMENTATION: {setting} is not applied to in-memory images: remove it")
    try:
        generator = ImageDataGenerator(**augmentation)
    except (TypeError, ValueError) as error:
        raise DataError(f"AUGMENTATION {augmentation}: {error}") from None
    for setting in ("width_shift_range", "height_shift_range"):
        if not 0 <= getattr(generator, setting) < 1:
            raise DataError(f"AUGMENTATION: {setting} must be a fraction of the image size, from 0 to 1")


def label_check_folds(train_dir, image_size, seed, folds):
    """--check-labels' reading of the training folder: (images, labels, paths, class names, the stratified folds, each
    (indices trained on, indices held out)), at most folds of them."""
    class_names, _ = photos.check_image_folder(train_dir, "training")
    images, labels, paths = photos.read_image_folder(train_dir, class_names, image_size, "training")
    folds = min(folds, np.bincount(labels).min())
    if folds < 2:
        raise DataError(f"'{train_dir}' has a class of 1 readable image: --check-labels needs at least 2 per class")
    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(images, labels)
    return images, labels, paths, class_names, list(splits)


# Batches: the images stay in memory as uint8; augmentation runs on them inside tf.data.

def network_input(images):
    """uint8 images as the networks take them: floats in [0, 1], as rescale=1/255 did."""
    return tf.cast(images, tf.float32) / 255.0


def _batches_of(images, labels, indices, num_classes):
    """Images and one-hot labels picked by index batches: only indices are shuffled (a buffer would copy the images)."""
    images, labels = tf.constant(images), tf.one_hot(labels, num_classes)
    return indices.map(lambda batch: (tf.gather(images, batch), tf.gather(labels, batch)))


def validation_batches(images, labels, num_classes, batch_size):
    """Batches in a fixed order, so that every epoch's val_loss is measured on the same images."""
    indices = tf.data.Dataset.range(len(images)).batch(batch_size)
    return _batches_of(images, labels, indices, num_classes).map(
        lambda x, y: (network_input(x), y)).prefetch(tf.data.AUTOTUNE)


def training_batches(images, labels, num_classes, batch_size, seed, augmentation=None):
    """Shuffled batches, every image once per epoch, transformed as ImageDataGenerator(**augmentation) would, a chunk of
    images at a time in TensorFlow: measured twice as fast as the generator's flow() and as Keras' layers."""
    order = tf.data.Dataset.range(len(images)).shuffle(len(images), seed=seed)
    chunks = _batches_of(images, labels, order.batch(AUGMENTATION_CHUNK), num_classes)
    if augmentation:
        generator = ImageDataGenerator(**augmentation)
        # One random seed per chunk makes the transforms repeatable with --seed.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        chunks = tf.data.Dataset.zip(chunks, seeds).map(
            lambda chunk, chunk_seed: (augment(chunk[0], generator, chunk_seed), chunk[1]),
            num_parallel_calls=tf.data.AUTOTUNE)
    batches = chunks.map(lambda x, y: (network_input(x), y)).unbatch().batch(batch_size)
    # unbatch() forgets how many batches there are; Keras needs it to end epochs quietly.
    batches = batches.apply(tf.data.experimental.assert_cardinality(math.ceil(len(images) / batch_size)))
    return batches.prefetch(tf.data.AUTOTUNE)


def affine_transforms(size, theta, shift_x, shift_y, shear, zoom_x, zoom_y):
    """ImageDataGenerator's affine matrix for square images, one per image: rotation, then shift, shear and zoom about
    the centre (its product written out); degrees and pixels, one value per image each. Returns the 8-number transforms
    keras.ops.image.affine_transform takes."""
    theta, shear, centre = theta * (math.pi / 180), shear * (math.pi / 180), size / 2 - 0.5
    cos, sin = tf.cos(theta), tf.sin(theta)
    a00, a01 = cos * zoom_x, -tf.sin(theta + shear) * zoom_y
    a10, a11 = sin * zoom_x, tf.cos(theta + shear) * zoom_y
    b0 = centre * (1 - a00 - a01) + cos * shift_x - sin * shift_y
    b1 = centre * (1 - a10 - a11) + sin * shift_x + cos * shift_y
    zeros = tf.zeros_like(theta)
    return tf.stack([a00, a01, b0, a10, a11, b1, zeros, zeros], axis=1)


def augment(images, generator, seed):
    """ImageDataGenerator.random_transform of a batch of square images, all at once: the same ranges, matrix and fill
    mode, bilinear like its scipy transform; brightness_range multiplies the pixels, without the generator's contrast
    stretch. Float32 pixels from 0 to 255."""
    count, size = tf.shape(images)[0], images.shape[1]
    seeds = iter(tf.unstack(tf.random.experimental.stateless_split(seed, num=8)))

    def uniform(low, high):
        return tf.random.stateless_uniform([count], next(seeds), minval=low, maxval=high)

    # The draws of ImageDataGenerator.get_random_transform; its "height" shift moves along x.
    transforms = affine_transforms(
        size,
        theta=uniform(-generator.rotation_range, generator.rotation_range),
        shift_x=uniform(-generator.height_shift_range, generator.height_shift_range) * size,
        shift_y=uniform(-generator.width_shift_range, generator.width_shift_range) * size,
        shear=uniform(-generator.shear_range, generator.shear_range),
        zoom_x=uniform(*generator.zoom_range), zoom_y=uniform(*generator.zoom_range))
    transformed = keras.ops.image.affine_transform(
        tf.cast(images, tf.float32), transforms, interpolation="bilinear",
        fill_mode=generator.fill_mode, fill_value=generator.cval)
    for enabled, axis in ((generator.horizontal_flip, 2), (generator.vertical_flip, 1)):
        if enabled:
            flip = uniform(0.0, 1.0) < 0.5
            transformed = tf.where(flip[:, None, None, None], tf.reverse(transformed, [axis]), transformed)
    if generator.brightness_range is not None:
        brightness = uniform(*generator.brightness_range)
        transformed = tf.clip_by_value(transformed * brightness[:, None, None, None], 0, 255)
    return transformed


# The epoch kept, and the run's state after every epoch.

class BestEpoch(keras.callbacks.Callback):
    """The epoch (counted from 1) of highest val_accuracy, the lower val_loss on a tie: its weights (weights_of's, if
    fit trains a part of it) and metrics. On held-out photos it did better than the last (docs/generalisation.md)."""
    # Keras' ModelCheckpoint(save_best_only=True) compares one metric, and writes its file in place.

    def __init__(self, epoch=None, metrics=None, weights=None, weights_of=None):
        super().__init__()
        self.epoch, self.metrics, self.weights, self.weights_of = epoch, metrics, weights, weights_of

    def on_epoch_end(self, epoch, logs=None):
        # An epoch whose val_loss is not a number diverged: never kept, and beaten by any other.
        best = self.metrics or {}
        if math.isfinite(logs["val_loss"]) and (not math.isfinite(best.get("val_loss", math.nan)) or (
                logs["val_accuracy"], -logs["val_loss"]) > (best["val_accuracy"], -best["val_loss"])):
            self.epoch, self.weights = epoch + 1, (self.weights_of or self.model).get_weights()
            self.metrics = {name: float(value) for name, value in logs.items()}

    def kept(self, last_epoch, last_metrics, last_weights):
        """(epoch, metrics, weights) of the model kept: the last epoch's, given, if none was kept."""
        return (last_epoch, last_metrics, last_weights) if self.weights is None else (
            self.epoch, self.metrics, self.weights)


class Checkpoint(keras.callbacks.Callback):
    """A run's state after each complete epoch, in <name>.checkpoint.weights.h5: the weights and optimizer state of the
    model fit trains, the epoch kept, the last epoch's metrics, the TensorBoard run and the run's settings. The same
    command goes on from it; one of other settings is refused, or moved aside with restart; a finished run removes it."""
    # Keras' BackupAndRestore writes the weights and the epoch as two files, each in place: a kill between or during
    # them resumes the wrong epoch, or fails. One file renamed into place cannot.

    def __init__(self, model_file, settings, best_epoch, initial_epoch, restart):
        super().__init__()
        self.path = f"{os.path.splitext(model_file)[0]}.checkpoint.weights.h5"
        self.settings = json.loads(json.dumps(settings))  # as it is read back: lists, not tuples
        self.best_epoch, self.epoch, self.last_metrics = best_epoch, initial_epoch, {}
        self.recorded = self.moved_aside = None  # the unfinished run's state
        if os.path.exists(self.path) and restart:
            self.moved_aside = self.path.replace(".checkpoint.", time.strftime(".checkpoint-%Y%m%d-%H%M%S."))
            os.replace(self.path, self.moved_aside)
        elif os.path.exists(self.path):
            try:
                with h5py.File(self.path, "r") as saved:
                    self.recorded = json.loads(saved.attrs["run"])
            except Exception as error:  # h5py and json raise many kinds on a file they did not write
                raise DataError(f"cannot read the unfinished run in '{self.path}' ({type(error).__name__}): move it "
                                "away, or add --restart to start again") from None
            then = self.recorded["settings"]
            differences = "; ".join(f"{name} {then.get(name)!r} then, {self.settings.get(name)!r} now" for name in
                                    sorted(then.keys() | self.settings.keys()) if then.get(name) != self.settings.get(name))
            if differences:
                raise DataError(f"'{self.path}' holds an unfinished run started with other settings ({differences}): "
                                "run the command it was started with to go on, or add --restart to start again (the "
                                "unfinished run is then kept aside)")
        self.run_dir, self.trained = (self.recorded or {}).get("run_dir"), (self.recorded or {}).get("trained")
        self._tell_stops()

    def restore(self, model):
        """Go on: model (the model fit trained, compiled) gets its weights and optimizer state, best_epoch its epoch."""
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(self.path)
            kept = (self.best_epoch.weights_of or model).get_weights()
            with h5py.File(self.path, "r") as saved:  # the kept weights that differ from the last
                for index, weights in saved.get("kept", {}).items():
                    kept[int(index)] = weights[()]
        except Exception as error:  # Keras and h5py raise many kinds on a file of another model
            raise DataError(f"cannot go on from '{self.path}' ({type(error).__name__}: {error}): add --restart to "
                            "start again") from None
        self.epoch, self.last_metrics = self.recorded["epoch"], self.recorded["last_metrics"]
        if self.recorded["kept_epoch"]:
            self.best_epoch.epoch, self.best_epoch.metrics = self.recorded["kept_epoch"], self.recorded["kept_metrics"]
            self.best_epoch.weights = kept
        self._tell_stops()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch, self.last_metrics = epoch + 1, {name: float(value) for name, value in logs.items()}
        runs.write_whole({self.path: self._save})
        self._tell_stops()

    def _save(self, path):
        self.model.save_weights(path)
        with h5py.File(path, "a") as saved:
            # Only the kept weights that differ from the last: stage 1 of TransferModel trains its classifier alone,
            # and would write the frozen network every epoch.
            last = (self.best_epoch.weights_of or self.model).get_weights()
            for index, (weights, last_weights) in enumerate(zip(self.best_epoch.weights or [], last)):
                if not np.array_equal(weights, last_weights):
                    saved.create_dataset(f"kept/{index}", data=weights)
            saved.attrs["run"] = json.dumps({
                "settings": self.settings, "epoch": self.epoch, "last_metrics": self.last_metrics,
                "kept_epoch": self.best_epoch.epoch, "kept_metrics": self.best_epoch.metrics,
                "run_dir": self.run_dir, "trained": self.model.name})

    def _tell_stops(self):
        if os.path.exists(self.path):
            runs.on_stop(f"the run is saved after epoch {self.epoch} in {self.path}: the same command " + (
                f"goes on at epoch {self.epoch + 1}" if self.epoch < self.settings["epochs"] else "saves its model"))
        elif self.epoch:
            runs.on_stop(f"nothing new saved: the same command starts again at epoch {self.epoch + 1}")

    def remove(self):
        for path in (self.path, runs.hidden_name(self.path)):
            if os.path.exists(path):
                os.unlink(path)


# Model files.

def save_model_files(model, model_file, class_names, kept, last, split):
    """Save the epoch kept as model_file and the last as <name>.last.h5, each with its weights beside it, all written
    whole; kept and last are (epoch, metrics, weights), the model holding the last after. split (photos.split_of) is
    the validation split a run going on must keep. Returns the paths."""
    def saver(path, epoch, metrics, weights):
        def save(written_as):
            model.set_weights(weights)
            if path.endswith(".weights.h5"):
                return model.save_weights(written_as)
            model.save(written_as)
            with h5py.File(written_as, "a") as saved:
                saved.attrs.update(class_names=json.dumps(class_names), epoch=epoch, metrics=json.dumps(metrics),
                                   validation_split=split)
        return save

    stem = os.path.splitext(model_file)[0]
    files = {model_file: kept, f"{stem}.weights.h5": kept, f"{stem}.last.h5": last, f"{stem}.last.weights.h5": last}
    try:
        runs.write_whole({path: saver(path, *state) for path, state in files.items()})
    finally:
        model.set_weights(last[2])
    return list(files)


def load_model(model_file, image_size=None, num_classes=None):
    """The model in model_file, not compiled, and its class names; checked against the data's shapes when given."""
    try:
        model = keras.models.load_model(model_file, compile=False)
        with h5py.File(model_file, "r") as saved:
            class_names = json.loads(saved.attrs["class_names"])
    except Exception as error:  # h5py and Keras raise many kinds on a file that is not a model
        raise DataError(f"cannot load the model in '{model_file}' ({type(error).__name__}: {error}): it was not "
                        "saved by these scripts; name another with --model-file") from None
    expected_shape = (None, image_size, image_size, 3)
    if image_size and (model.input_shape != expected_shape or model.output_shape != (None, num_classes)):
        raise DataError(f"cannot resume '{model_file}': it takes {model.input_shape} and gives {model.output_shape}, "
                        f"but the data needs {expected_shape} and {num_classes} classes")
    return model, class_names


def load_run(model_file, initial_epoch, split, image_size, num_classes, compile_model, best_epoch):
    """Go on from a finished run (--initial-epoch): its last epoch, which must be initial_epoch, trained with split,
    compiled by compile_model (which returns the part fit trains, if not all), with its optimizer's state; best_epoch
    gets the epoch kept."""
    stem = os.path.splitext(model_file)[0]
    if not os.path.isfile(f"{stem}.last.h5"):
        raise DataError(f"cannot resume: model file '{stem}.last.h5' does not exist; train from the start "
                        "(--initial-epoch 0) or name the saved model with --model-file")
    with h5py.File(f"{stem}.last.h5", "r") as saved:
        recorded, recorded_split = saved.attrs.get("epoch"), saved.attrs.get("validation_split")
    if recorded != initial_epoch:
        raise DataError(f"cannot resume '{model_file}' after epoch {initial_epoch}: '{stem}.last.h5' holds the model "
                        f"after epoch {recorded}; use --initial-epoch {recorded}")
    if recorded_split != split:  # another split would validate on images the model trained on
        raise DataError(f"cannot resume '{stem}.last.h5' {f'with {split}' if split else 'on a validation folder'}: "
                        f"it was trained {f'with {recorded_split}' if recorded_split else 'on a validation folder'}; "
                        "resume it the same way")
    model, _ = load_model(f"{stem}.last.h5", image_size, num_classes)
    trained = compile_model(model) or model  # the model fit trains: in TransferModel's stage 1, its classifier
    if not trained.optimizer.built:
        trained.optimizer.build(trained.trainable_variables)
    model.load_weights(f"{stem}.weights.h5")
    best_epoch.weights = model.get_weights()
    model.load_weights(f"{stem}.last.weights.h5")  # the weights files hold the optimizer's state too
    with h5py.File(model_file, "r") as saved:
        best_epoch.epoch, best_epoch.metrics = int(saved.attrs["epoch"]), json.loads(saved.attrs["metrics"])
    return model


def probabilities(model, images):
    """The model's class probabilities of uint8 images, called 64 at a time: predict() would trace a new function for
    each new model, and TensorFlow warns of that after a few."""
    return np.concatenate([model(network_input(images[start:start + 64])) for start in range(0, len(images), 64)])


def predict(model_file, path):
    """(paths, predicted classes, their probabilities) of the images at path, by the model in model_file."""
    paths = photos.list_images_to_predict(path)
    if not os.path.isfile(model_file):
        raise DataError(f"no model '{model_file}': train one first, or name one with --model-file")
    model, class_names = load_model(model_file)
    images, paths = photos.read_images_to_predict(paths, model.input_shape[1])
    probabilities = model.predict(network_input(images), batch_size=32, verbose=0)
    return paths, [class_names[index] for index in probabilities.argmax(axis=1)], probabilities.max(axis=1)
