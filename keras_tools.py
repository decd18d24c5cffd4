"""The Keras side of the scripts: a quiet TensorFlow start, batches augmented in memory,
model files saved whole and resumed, Ctrl-C, and the pictures and tables runs log in TensorBoard.

Import it before Keras or TensorFlow: TensorFlow starts here. Names: save_* write model
files (all of a set or none), load_* read them, log_* write to TensorBoard.
"""

import image_files  # first: from then on a stop while the modules load is one line

import contextlib
import itertools
import json
import logging
import math
import os
import re
import secrets
import shlex
import subprocess
import sys
import tempfile
import time

from image_files import DataError

# Lines TensorFlow prints as it starts that say nothing to act on ("failed call to cuInit"
# without a GPU reads like a failure): absl's banner, its information lines and their second line.
_START_UP_LINE = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\)"
                            r"|I\d{4} |To enable the following instructions:")


def without_start_up_lines(text):
    """text less TensorFlow's start-up lines, and its failed cuInit where no CUDA driver was
    found (there is no GPU, then); with a driver, that is a real error and stays."""
    no_gpu_driver = "Could not find cuda drivers" in text
    return "".join(line for line in text.splitlines(keepends=True) if not _START_UP_LINE.match(line)
                   and not (no_gpu_driver and "failed call to cuInit" in line))


@contextlib.contextmanager
def start_up_lines_hidden():
    """What is written on file descriptor 2 inside the block, printed less start-up lines after it."""
    try:
        stderr_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no console, or a stream with no file behind it
        yield
        return
    sys.stderr.flush()
    saved_stderr = os.dup(stderr_fd)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), stderr_fd)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            finally:  # even when a stop lands here, as TensorFlow's long start returns
                os.dup2(saved_stderr, stderr_fd)
                os.close(saved_stderr)
            caught.seek(0)
            sys.stderr.write(without_start_up_lines(caught.read().decode(errors="replace")))
            sys.stderr.flush()


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # and no C++ information lines later
with start_up_lines_hidden():
    import tensorflow as tf
    tf.config.list_physical_devices("GPU")  # where TensorFlow looks for a GPU, and says so

import h5py  # noqa: E402 (after TensorFlow's quiet start)
import keras  # noqa: E402
import numpy as np  # noqa: E402
from tensorflow.keras.preprocessing.image import ImageDataGenerator  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.metrics import classification_report, confusion_matrix  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402
from tensorboard.plugins.hparams import api as hparams_api  # noqa: E402

# Keras 3 calls .h5 files legacy at every save; the scripts save .h5 on purpose, as in 2018.
logging.getLogger("absl").addFilter(lambda record: "considered legacy" not in record.getMessage())

# Training images are shuffled, augmented and rescaled this many at a time, then batched.
AUGMENTATION_CHUNK = 64


# Checks of the CNN scripts' settings, made before anything slow starts.

def check_training_settings(epochs, batch_size, image_size, augmentation, smallest_image=22):
    """augmentation is ImageDataGenerator's keyword arguments, as the scripts state them;
    smallest_image the network's smallest input side (three 3x3 convolutions, each followed by
    2x2 pooling, need 22 pixels; keras.applications' networks 32)."""
    for flag, value in (("--epochs", epochs), ("--batch-size", batch_size)):
        if value < 1:
            raise DataError(f"{flag} {value} must be 1 or more")
    if image_size < smallest_image:
        raise DataError(f"--image-size {image_size} is too small: the network needs {smallest_image} pixels or more")
    # Named as the user wrote them, before the generator turns zca_whitening on featurewise_center.
    for setting in ("featurewise_center", "samplewise_center", "featurewise_std_normalization",
                    "samplewise_std_normalization", "zca_whitening", "channel_shift_range",
                    "preprocessing_function", "rescale"):
        if augmentation.get(setting):
            raise DataError(f"AUGMENTATION: {setting} is not applied to in-memory images: remove it")
    try:
        generator = ImageDataGenerator(**augmentation)
    except (TypeError, ValueError) as error:
        raise DataError(f"AUGMENTATION {augmentation}: {error}") from None
    for setting in ("width_shift_range", "height_shift_range"):
        if not 0 <= getattr(generator, setting) < 1:
            raise DataError(f"AUGMENTATION: {setting} must be a fraction of the image size, from 0 to 1")


def check_resume(model_file, initial_epoch, epochs, split=""):
    """Check a request to resume the model in model_file after initial_epoch, up to epochs, with
    split (split_of) the validation split it was trained with."""
    if initial_epoch < 0:
        raise DataError(f"--initial-epoch {initial_epoch} must be 0 (a new model) or more")
    if epochs <= initial_epoch:
        raise DataError(f"--epochs {epochs} must be above --initial-epoch {initial_epoch}: "
                        "--epochs is the epoch to stop after, not the number of epochs to add")
    if initial_epoch == 0:
        return
    if not os.path.isfile(model_file):
        raise DataError(f"cannot resume: model file '{model_file}' does not exist; train from the "
                        "start (--initial-epoch 0) or name the saved model with --model-file")
    resumed_file = file_to_resume(model_file)
    saved_as = {}  # save_run's epoch and set mark of each file, None in other Keras models
    for path in (resumed_file, model_file):
        try:
            with h5py.File(path, "r") as saved:
                saved_as[path] = (saved.attrs.get("epoch"), saved.attrs.get("save_id"),
                                  saved.attrs.get("validation_split", ""))
        except (OSError, ValueError) as error:  # h5py's OSError on a file that is not HDF5
            raise DataError(f"cannot resume: '{path}' is not a Keras model saved by these scripts "
                            f"({error}); name another with --model-file") from None
    recorded, set_id, recorded_split = saved_as[resumed_file]
    if recorded is not None and recorded != initial_epoch:
        raise DataError(f"cannot resume '{model_file}' after epoch {initial_epoch}: '{resumed_file}' "
                        f"holds the model after epoch {recorded}; use --initial-epoch {recorded}")
    if set_id != saved_as[model_file][1]:
        raise DataError(f"cannot resume '{model_file}': it and '{resumed_file}' were not saved together "
                        "(two runs saved to one --model-file, or a save was cut short); go on from the "
                        f"last epoch alone with --model-file {resumed_file}, or start again")
    if recorded_split != split:  # another split would validate on images the model trained on
        raise DataError(f"cannot resume '{resumed_file}' {f'with {split}' if split else 'on a validation folder'}: "
                        f"it was trained {f'with {recorded_split}' if recorded_split else 'on a validation folder'}"
                        "; resume it the same way")


def check_run(args, augmentation, smallest_image=22):
    """Check a training run's folders, settings and resume request before anything slow starts:
    (the class names, what to tell about the data)."""
    class_names, train_counts, validation_counts = image_files.check_image_folders(
        args.train_dir, args.validation_dir, args.validation_split)
    image_files.check_output_file(args.model_file, ".h5")
    image_files.check_log_folder(args.log_dir)
    image_files.check_seed(args.seed)
    check_training_settings(args.epochs, args.batch_size, args.image_size, augmentation, smallest_image)
    check_resume(args.model_file, args.initial_epoch, args.epochs, split_of(vars(args)))
    return class_names, (f"Classes: {', '.join(class_names)}\nTraining images per class: {train_counts}\n"
                         f"Validation images per class: {validation_counts}")


def split_of(options):
    """The run's validation split (options: vars(args)) as recorded in its model files, the flags
    that make it again; empty with a validation folder."""
    fraction = options.get("validation_split")
    return f"--validation-split {fraction} --seed {options['seed']}" if fraction else ""


def read_run_images(args, class_names):
    """Every image read once, at the size the network takes: (images, labels) to train on, (images,
    labels, paths within their folder) to validate on, {name: text} of files for the run's folder,
    and the seconds taken."""
    started = time.perf_counter()
    train, validation, run_files = image_files.read_training_and_validation(
        args.train_dir, args.validation_dir, class_names, args.image_size, args.validation_split, args.seed)
    return train, validation, run_files, time.perf_counter() - started


def label_check_folds(args, augmentation, epochs, folds, smallest_image=22):
    """--check-labels' checks and reading of the training folder: (images, labels, paths, class
    names, the stratified folds, each (indices trained on, indices held out)), at most folds of them."""
    class_names, _ = image_files.check_image_folder(args.train_dir, "training")
    image_files.check_seed(args.seed)
    check_training_settings(epochs, args.batch_size, args.image_size, augmentation, smallest_image)
    images, labels, paths = image_files.read_image_folder(args.train_dir, class_names, args.image_size,
                                                          "training")
    folds = min(folds, np.bincount(labels).min())
    if folds < 2:
        raise DataError(f"'{args.train_dir}' has a class of 1 readable image: "
                        "--check-labels needs at least 2 per class")
    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=args.seed).split(images, labels)
    return images, labels, paths, class_names, list(splits)


# Batches: the images stay in memory as uint8; augmentation runs on them inside tf.data.

def network_input(images):
    """uint8 images as the networks take them: floats in [0, 1], as rescale=1/255 did."""
    return tf.cast(images, tf.float32) / 255.0


def _batches_of(images, labels, indices, num_classes):
    """Images and one-hot labels picked by index batches: only indices are shuffled, as a
    shuffle buffer would hold a second copy of the images."""
    images, labels = tf.constant(images), tf.one_hot(labels, num_classes)
    return indices.map(lambda batch: (tf.gather(images, batch), tf.gather(labels, batch)))


def validation_batches(images, labels, num_classes, batch_size):
    """Batches in a fixed order, so that every epoch's val_loss is measured on the same images."""
    indices = tf.data.Dataset.range(len(images)).batch(batch_size)
    return _batches_of(images, labels, indices, num_classes).map(
        lambda x, y: (network_input(x), y)).prefetch(tf.data.AUTOTUNE)


def training_batches(images, labels, num_classes, batch_size, seed, augmentation=None):
    """Shuffled batches, every image once per epoch, randomly transformed as
    ImageDataGenerator(**augmentation) would (nothing if augmentation is empty), a chunk of
    images at a time in TensorFlow: measured twice as fast as the generator's flow()."""
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
    """ImageDataGenerator's affine matrix for square images, one per image: rotation, then shift,
    shear and zoom about the centre (its product written out); degrees and pixels, one value per
    image each. Returns the 8-number transforms keras.ops.image.affine_transform takes."""
    theta, shear, centre = theta * (math.pi / 180), shear * (math.pi / 180), size / 2 - 0.5
    cos, sin = tf.cos(theta), tf.sin(theta)
    a00, a01 = cos * zoom_x, -tf.sin(theta + shear) * zoom_y
    a10, a11 = sin * zoom_x, tf.cos(theta + shear) * zoom_y
    b0 = centre * (1 - a00 - a01) + cos * shift_x - sin * shift_y
    b1 = centre * (1 - a10 - a11) + sin * shift_x + cos * shift_y
    zeros = tf.zeros_like(theta)
    return tf.stack([a00, a01, b0, a10, a11, b1, zeros, zeros], axis=1)


def augment(images, generator, seed):
    """ImageDataGenerator.random_transform of a batch of square images, all at once: the same
    ranges, matrix and fill mode, bilinear like its scipy transform; brightness_range multiplies
    the pixels, without the generator's contrast stretch. Float32 pixels from 0 to 255."""
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


# Model files: <name>.h5, the epoch kept (BestEpoch), and <name>.last.h5, the last epoch, from
# which a run resumes; each with its weights beside it (<name>.weights.h5, <name>.last.weights.h5)
# and the class names, epoch and metrics in its attributes.

def sibling_file(model_file, kind):
    """<name>.<kind>.h5 beside model_file: kind is "weights", "last", "partial", ..."""
    return f"{os.path.splitext(model_file)[0]}.{kind}.h5"


def file_to_resume(model_file):
    """<name>.last.h5, the last epoch, which a run resumes; model_file for runs saved before it existed."""
    last_file = sibling_file(model_file, "last")
    return last_file if os.path.isfile(last_file) else model_file


def _model_saves(model, model_file, class_names, epoch, metrics, weights, set_id, split):
    """{path: save} of model with weights as model_file and its weights file, both marked with
    set_id; model keeps its own weights."""
    def with_weights(save):
        def save_with_weights(path):
            own_weights = model.get_weights()
            model.set_weights(weights)
            try:
                save(path)
            finally:
                model.set_weights(own_weights)
        return save_with_weights

    def save_with_attributes(path):
        model.save(path)
        with h5py.File(path, "a") as saved:
            saved.attrs["class_names"] = json.dumps(list(class_names))
            saved.attrs["epoch"] = epoch
            saved.attrs["metrics"] = json.dumps(metrics)
            saved.attrs["save_id"] = set_id
            saved.attrs["validation_split"] = split

    def save_weights_marked(path):
        model.save_weights(path)
        with h5py.File(path, "a") as saved:
            saved.attrs["save_id"] = set_id

    return {model_file: with_weights(save_with_attributes),
            sibling_file(model_file, "weights"): with_weights(save_weights_marked)}


def save_run(model, model_file, class_names, best_epoch, last_epoch, last_metrics, split=""):
    """Save the epoch best_epoch kept as model_file and the last epoch (last_epoch, counted from 1,
    its Keras logs last_metrics) as <name>.last.h5, all four files at once; returns their paths.
    model holds the last epoch, or the kept one after BestEpoch.on_train_end. The files cannot be
    renamed into place in one step: each is marked with the set's id, and a set whose files
    differ (a kill between the renames, two runs saving at once) is refused on resuming. split
    (split_of) is the validation split a resumed run must keep."""
    last_weights = best_epoch.last_weights or model.get_weights()
    kept_epoch, kept_metrics = best_epoch.kept(last_epoch, last_metrics)
    kept_weights = last_weights if best_epoch.weights is None else best_epoch.weights
    set_id = secrets.token_hex(8)
    saves = _model_saves(model, model_file, class_names, kept_epoch, kept_metrics, kept_weights, set_id, split)
    saves.update(_model_saves(model, sibling_file(model_file, "last"), class_names, last_epoch, last_metrics,
                              last_weights, set_id, split))
    image_files.save_files_atomically(saves)
    return list(saves)


def load_model(model_file, image_size=None, num_classes=None):
    """The model in model_file, not compiled; its class names; checked against the data's
    shapes when given. A file that is not such a model is a DataError."""
    try:
        model = keras.models.load_model(model_file, compile=False)
        with h5py.File(model_file, "r") as saved:
            class_names = json.loads(saved.attrs["class_names"])
    except Exception as error:  # h5py and Keras raise many kinds on a file that is not a model
        raise DataError(f"cannot load the model in '{model_file}' ({type(error).__name__}: {error}): "
                        "it was not saved by these scripts; name another with --model-file") from None
    expected_shape = (None, image_size, image_size, 3)
    if image_size and (model.input_shape != expected_shape or model.output_shape != (None, num_classes)):
        raise DataError(f"cannot resume '{model_file}': it takes {model.input_shape} and gives "
                        f"{model.output_shape}, but the data needs {expected_shape} and "
                        f"{num_classes} classes")
    return model, class_names


def load_run(model_file, image_size, num_classes, compile_model):
    """Go on with a run save_run saved: (the last epoch, compiled, with its optimizer state; the
    BestEpoch so far). Files of older runs, without <name>.last.h5, resume model_file."""
    resumed_file = file_to_resume(model_file)
    model, _ = load_model(resumed_file, image_size, num_classes)
    compile_model(model)
    # load_model restores an .h5 model's weights, not its optimizer's state (Adadelta's averages).
    with h5py.File(resumed_file, "r") as saved:
        if "optimizer_weights" in saved:
            state = saved["optimizer_weights"]
            model.optimizer.build(model.trainable_variables)
            model.optimizer.set_weights([state[name][()] for name in state.attrs["weight_names"]])
    if resumed_file == model_file:
        return model, BestEpoch()
    kept_model, _ = load_model(model_file, image_size, num_classes)
    with h5py.File(model_file, "r") as saved:
        epoch, metrics = int(saved.attrs["epoch"]), json.loads(saved.attrs["metrics"])
    return model, BestEpoch(epoch, metrics, kept_model.get_weights())


# Keras' ModelCheckpoint and BackupAndRestore write their files in place (a kill mid-save
# truncates them) and keep no class names: the best epoch is kept in memory, saved with the last.
class BestEpoch(keras.callbacks.Callback):
    """The epoch (counted from 1) of highest val_accuracy, the lower val_loss on a tie: its weights
    and logs, put back in the model when training ends (the last epoch's in self.last_weights).
    On held-out photos it did better than the last epoch (docs/generalisation.md). A resumed run
    starts from the one saved before, so that only a better epoch replaces it. Put it before the
    callbacks that describe the model at the end (ValidationReport)."""

    def __init__(self, epoch=None, metrics=None, weights=None, weights_of=None):
        super().__init__()
        self.epoch, self.metrics, self.weights, self.last_weights = epoch, metrics, weights, None
        self.weights_of = weights_of  # the model whose weights are kept, if fit trains a part of it

    @property
    def kept_model(self):
        return self.model if self.weights_of is None else self.weights_of

    def on_epoch_end(self, epoch, logs=None):
        # An epoch whose val_loss is not a number diverged: never kept, and beaten by any other.
        best = self.metrics or {}
        best_score = (best.get("val_accuracy", -math.inf), -best.get("val_loss", math.inf))
        if math.isfinite(logs["val_loss"]) and (
                not math.isfinite(best.get("val_loss", math.nan))
                or (logs["val_accuracy"], -logs["val_loss"]) > best_score):
            self.epoch, self.weights = epoch + 1, self.kept_model.get_weights()
            self.metrics = {name: float(value) for name, value in logs.items()}

    def kept(self, last_epoch, last_metrics):
        """(epoch, metrics) of the model kept: the last epoch's if none was kept (none validated)."""
        return (last_epoch, last_metrics) if self.weights is None else (self.epoch, self.metrics)

    def on_train_end(self, logs=None):
        self.last_weights = self.kept_model.get_weights()
        if self.weights is not None:
            self.kept_model.set_weights(self.weights)


class EpochInterrupted(Exception):
    """Ctrl-C during an epoch's training steps: fit is left before the epoch is validated or logged."""


class StopOnCtrlC(keras.callbacks.Callback):
    """A stop (Ctrl-C, SIGTERM or SIGHUP) ends fit keeping complete epochs only (a
    KeyboardInterrupt inside TensorFlow can be lost, or stop it mid-step). During training steps,
    the next step's end raises EpochInterrupted, and restore_last_epoch() puts back the weights
    and optimizer state of the last complete epoch; during validation, the epoch is complete and
    fit stops after it. A second stop quits at once. Put it last, after ReduceLROnPlateau, which
    changes the optimizer. signal_number is the stop's, None if there was none."""

    def __init__(self, initial_epoch):
        super().__init__()
        self.completed_epochs, self.last_epoch_logs = initial_epoch, None
        self.signal_number, self._handlers = None, {}

    @property
    def interrupted(self):
        return self.signal_number is not None

    def on_train_begin(self, logs=None):
        self._handlers = image_files.handle_stops(self._request_stop)
        self._keep_epoch()  # what a stop in the first epoch goes back to, in each fit

    def _request_stop(self, signal_number):
        self._restore_handlers()  # a second stop quits at once
        self.signal_number, self.model.stop_training = signal_number, True
        name = image_files.stop_name(signal_number)
        with contextlib.suppress(OSError):
            image_files.notice(f"\n{name}: stopping; the epochs completed so far will be saved. "
                               f"{name} again quits without saving.")

    def _restore_handlers(self):
        image_files.restore_handlers(self._handlers)
        self._handlers = {}

    def on_train_batch_end(self, batch, logs=None):
        if self.interrupted:
            raise EpochInterrupted

    def on_epoch_end(self, epoch, logs=None):
        self.completed_epochs, self.last_epoch_logs = epoch + 1, dict(logs)
        self._keep_epoch()

    def _keep_epoch(self):
        self._last_epoch_state = (self.model.get_weights(),
                                  [variable.numpy() for variable in self.model.optimizer.variables])

    def restore_last_epoch(self):
        weights, optimizer_state = self._last_epoch_state
        self.model.set_weights(weights)
        for index, variable in enumerate(self.model.optimizer.variables):
            # Variables built since (at a fit's first step) start from zero, as a new optimizer's.
            variable.assign(optimizer_state[index] if index < len(optimizer_state) else tf.zeros_like(variable))

    def on_train_end(self, logs=None):
        self._restore_handlers()


def command_line(script, options):
    """The command that runs script with options ({"model_file": ...} for --model-file, as
    argparse keeps them; None and False left out, True a flag alone), quoted for this system's shell."""
    words = ["python", script]
    for name, value in options.items():
        if value is not None and value is not False:
            words += [f"--{name.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return subprocess.list2cmdline(words) if os.name == "nt" else shlex.join(words)


def partial_file(model_file, run_dir):
    """Where a stopped run saves its complete epochs: <name>.partial-<date>-<time>.h5, named after
    its TensorBoard run folder, never another run's (a resumed partial run's name loses its
    own tag first, so that names do not grow)."""
    stem = re.sub(r"\.partial-[^.]*$", "", os.path.splitext(model_file)[0])
    stamp = os.path.basename(run_dir).split("-", 1)[-1]
    for suffix in itertools.chain([""], (f"-{number}" for number in itertools.count(2))):
        path = f"{stem}.partial-{stamp}{suffix}.h5"
        if not os.path.exists(path) and not os.path.exists(sibling_file(path, "last")):
            return path


def save_interrupted_run(model, class_names, best_epoch, stop_on_ctrl_c, script, options, run_dir):
    """After a stop before the last epoch, save the complete epochs (model holds the last) as a
    partial set of their own; returns what to tell the user, with the command that goes on with
    the run's flags (options)."""
    model_file, initial_epoch = options["model_file"], options["initial_epoch"]
    completed = stop_on_ctrl_c.completed_epochs
    if completed == initial_epoch == 0:
        return ("Interrupted before the end of epoch 1; nothing saved. To start again: "
                + command_line(script, options))
    if completed == initial_epoch:
        return (f"Interrupted before the end of epoch {completed + 1}; nothing new to save: {model_file} "
                f"still holds epoch {completed}. To go on: {command_line(script, options)}")
    saved = save_run(model, partial_file(model_file, run_dir), class_names, best_epoch, completed,
                     stop_on_ctrl_c.last_epoch_logs, split_of(options))
    best = "" if best_epoch.weights is None else f" (kept: epoch {best_epoch.epoch})"
    go_on = command_line(script, {**options, "model_file": saved[0], "initial_epoch": completed})
    return f"Interrupted after epoch {completed}; saved {', '.join(saved)}{best}. To go on: {go_on}"


# A training run of a model script: its TensorBoard run, fit until the end or a stop, the save.

def start_run(args, script, hparams, class_names, train_images, train_labels, augmentation, run_files):
    """A new TensorBoard run folder with run_files ({name: text}), the run's settings (args and the
    script's hparams) and a grid of training images as the network gets them. Returns (the folder, its writer)."""
    run_dir = image_files.new_run_folder(args.log_dir, script, run_files)
    run_log = tf.summary.create_file_writer(run_dir)
    log_hparams(run_log, run_dir, {
        "script": script, "train_dir": args.train_dir, "validation_dir": args.validation_dir or "",
        "validation_split": args.validation_split or 0.0,
        "image_size": args.image_size, "batch_size": args.batch_size, "epochs": args.epochs,
        "initial_epoch": args.initial_epoch, "seed": args.seed, **hparams}, class_names, train_labels, augmentation)
    log_training_images(run_log, train_images, train_labels, class_names, augmentation, args.seed,
                        step=args.initial_epoch)
    return run_dir, run_log


def fit_until_stopped(model, callbacks, stop_on_ctrl_c, *data, **fit_arguments):
    """model.fit(*data, **fit_arguments) with callbacks, stop_on_ctrl_c (a StopOnCtrlC) the last of
    them: a stop half-way through an epoch goes back to the last complete one, ends the callbacks as
    fit would (the report, the logs closed) and returns; a TensorBoard file that cannot be written
    is a DataError."""
    try:
        model.fit(*data, callbacks=callbacks, **fit_arguments)
    except EpochInterrupted:
        stop_on_ctrl_c.restore_last_epoch()
        for callback in callbacks:
            callback.on_train_end()
    except tf.errors.OpError as error:  # most often TensorBoard's files, on a full disk
        raise log_write_error(error) from None
    finally:
        stop_on_ctrl_c.on_train_end()  # stops are handled as before fit, however it ended


def save_training(model, script, options, default_model_file, class_names, best_epoch, stop_on_ctrl_c,
                  validation_report, run_dir):
    """Save what was trained (model holds the epoch kept after fit's end), a stop from now on waiting
    for the files: a stop before the last epoch saves a partial set, otherwise the run is saved whole.
    options are the script's flags (vars(args)). Returns (what to print, and after a stop (the
    message to end the run with, its signal number), else None)."""
    with image_files.stops_held_off() as late_stops:
        if stop_on_ctrl_c.interrupted and stop_on_ctrl_c.completed_epochs < options["epochs"]:
            report = ""
            message = save_interrupted_run(model, class_names, best_epoch, stop_on_ctrl_c, script, options, run_dir)
        else:
            report = _save_and_report(model, script, options, default_model_file, class_names, best_epoch,
                                      stop_on_ctrl_c, validation_report)
            message = "Stopped after the last epoch; the run is saved whole, as said above."
    stop = stop_on_ctrl_c.signal_number or next(iter(late_stops), None)
    return report, (message, stop) if stop else None


def _save_and_report(model, script, options, default_model_file, class_names, best_epoch, stop_on_ctrl_c,
                     validation_report):
    """Save the epoch kept and the last; what the kept one is and what it gets wrong."""
    model_file, last_epoch = options["model_file"], stop_on_ctrl_c.completed_epochs
    last_metrics = {name: float(value) for name, value in stop_on_ctrl_c.last_epoch_logs.items()}
    saved_files = save_run(model, model_file, class_names, best_epoch, last_epoch, last_metrics, split_of(options))
    kept_epoch, kept_metrics = best_epoch.kept(last_epoch, last_metrics)
    predict_command = command_line(script, {
        "predict": "PHOTOS", "model_file": None if model_file == default_model_file else model_file})
    return "\n".join([
        f"Saved {', '.join(saved_files)}",
        f"Kept in {model_file}: epoch {kept_epoch} of {last_epoch}, the one of highest val_accuracy; "
        f"the last epoch, which --initial-epoch resumes, is in {saved_files[2]}",
        f"To classify photos with it: {predict_command}",
        f"Validation set, per class:\n{validation_report.report}",
        f"Misclassified validation images, most confident first:\n{validation_report.mistakes}",
        # The last line sums the kept epoch up, like the 2018 README's results.
        " - ".join(f"{name}: {kept_metrics[name]:.4f}" for name in ("loss", "accuracy", "val_loss", "val_accuracy"))])


# TensorBoard: Keras writes each epoch's scalars in <run>/train and <run>/validation; the
# scripts write the rest (settings, pictures, tables) in <run> itself.

def log_hparams(run_log, run_dir, hparams, class_names, train_labels, augmentation=None):
    """The run's settings, for the HParams dashboard, with its number of training images per class;
    augmentation (ImageDataGenerator's keyword arguments) is recorded beside them, 0 where unset."""
    counts = np.bincount(train_labels, minlength=len(class_names))
    hparams = {**hparams, "train_images": len(train_labels),
               "images_per_class": ", ".join(f"{name} {count}" for name, count in zip(class_names, counts))}
    if augmentation is not None:
        hparams.update({"rotation_range": 0, "width_shift_range": 0.0, "height_shift_range": 0.0,
                        "shear_range": 0.0, "zoom_range": 0.0, "horizontal_flip": False, **augmentation})
    # HParams takes numbers, booleans and valid text; folder names may hold any bytes.
    hparams = {name: value if isinstance(value, (bool, int, float)) else image_files.readable_text(str(value))
               for name, value in hparams.items()}
    with written(run_log):
        hparams_api.hparams(hparams, trial_id=image_files.readable_text(os.path.basename(run_dir)))


def log_picture(run_log, tag, picture, step, description):
    """One RGB picture (a PIL image) as a TensorBoard image; its description may name files."""
    with written(run_log):
        tf.summary.image(tag, np.asarray(picture)[None], step=step,
                         description=image_files.readable_text(description))


def log_text(run_log, tag, markdown, step):
    """Markdown as TensorBoard text; bytes of file names that are not UTF-8 shown as \ufffd."""
    with written(run_log):
        tf.summary.text(tag, image_files.readable_text(markdown), step=step)


@contextlib.contextmanager
def written(run_log):
    """Summaries written in the block go to run_log's file at once; one that cannot be written is
    a DataError naming it."""
    try:
        with run_log.as_default():
            yield
        run_log.flush()
    except tf.errors.OpError as error:
        raise log_write_error(error) from None


def log_write_error(error):
    """A DataError naming the TensorBoard file a TensorFlow error says it could not write (a full
    disk, a file-size limit), for the line the scripts print; other errors are returned as they are."""
    file = re.search(r"events to (.*tfevents\S*)", error.message)
    if file is None:
        return error
    reason = re.search(r"tfevents\S*; ([^\n]+)", error.message)
    return DataError(f"cannot write TensorBoard's file '{file.group(1)}'"
                     f"{f' ({reason.group(1)})' if reason else ''}: free some space, or choose another --log-dir")


def log_training_images(run_log, images, labels, class_names, augmentation, seed, step, count=16):
    """A grid of training images as the network gets them: resized and, if augmentation, augmented.
    The first images of each class in turn, so that every class shows."""
    by_class = [np.flatnonzero(labels == index) for index in range(len(class_names))]
    picked = [index for group in itertools.zip_longest(*by_class) for index in group if index is not None]
    batch = images[picked[:count]]
    if augmentation:
        batch = augment(batch, ImageDataGenerator(**augmentation), tf.constant([seed, 0]))
    pictures = [Image.fromarray(np.asarray(image).round().astype(np.uint8)) for image in batch]
    captions = [class_names[labels[index]] for index in picked[:count]]
    log_picture(run_log, "augmented_training_images" if augmentation else "training_images",
                image_files.picture_grid(pictures, captions, columns=3, tile=115), step,
                "What the network is trained on: training images at the size it takes, "
                + ("after random augmentation." if augmentation else "not augmented."))


def report_table(labels, predictions, class_names):
    """Per-class precision, recall and support, and the accuracy, as a Markdown table."""
    report = classification_report(labels, predictions, labels=range(len(class_names)),
                                   target_names=class_names, output_dict=True, zero_division=np.nan)
    share = "{:.3f}".format  # n/a for nan: a class never predicted has no precision
    lines = ["| class | precision | recall | support |", "|---|---|---|---|"] + [
        f"| {name} | {share(report[name]['precision']).replace('nan', 'n/a')} | "
        f"{share(report[name]['recall']).replace('nan', 'n/a')} | {report[name]['support']:.0f} |"
        for name in class_names]
    return "\n".join(lines + [f"| all: accuracy {np.mean(labels == predictions):.3f} | | | {len(labels)} |"])


def log_validation(run_log, images, labels, probabilities, names, class_names, title, step, predictions=None):
    """The validation images' confusion matrix, and the misclassified ones, most confident
    first (up to 24), as TensorBoard pictures. predictions default to the likeliest classes."""
    predictions = probabilities.argmax(axis=1) if predictions is None else predictions
    counts = confusion_matrix(labels, predictions, labels=range(len(class_names)))
    log_picture(run_log, "confusion_matrix", image_files.draw_confusion_matrix(counts, class_names, title),
                step, "Validation images by true class (rows) and predicted class (columns).")
    confidences = probabilities[np.arange(len(predictions)), predictions]
    wrong = image_files.mistakes(labels, predictions, confidences)[:24]
    picture = image_files.picture_grid(
        [Image.fromarray(images[index]) for index in wrong],
        [f"true: {class_names[labels[index]]}\npredicted: {class_names[predictions[index]]} "
         f"{confidences[index]:.2f}\n{os.path.basename(names[index])}" for index in wrong],
        columns=2, tile=170) if len(wrong) else image_files.draw_message(f"No validation image misclassified: {title}")
    log_picture(run_log, "misclassified_validation_images", picture, step,
                "Validation images the model got wrong, the most confident mistakes first.")
    return predictions, confidences


class ValidationReport(keras.callbacks.Callback):
    """The validation set's confusion matrix and mistakes every few epochs, and at the end (after
    the last epoch, or Ctrl-C) those of the model saved, with its per-class report and list of
    mistakes, kept in self.report and self.mistakes. batches are validation_batches() of images,
    whose names (paths in the validation folder) are for the mistakes."""

    def __init__(self, run_log, batches, images, labels, names, class_names, every):
        super().__init__()
        self.run_log, self.batches, self.images, self.labels = run_log, batches, images, labels
        self.names, self.class_names, self.every = names, class_names, every
        self.last_epoch = self.report = self.mistakes = None

    def _log(self, epoch, title):
        return log_validation(self.run_log, self.images, self.labels, self.model.predict(self.batches, verbose=0),
                              self.names, self.class_names, title, epoch)

    def on_epoch_end(self, epoch, logs=None):
        self.last_epoch = epoch
        if (epoch + 1) % self.every == 0 and epoch + 1 < self.params["epochs"]:  # the last: at the end
            self._log(epoch, f"validation set after epoch {epoch + 1}")

    def on_train_end(self, logs=None):
        if self.last_epoch is None:
            return  # stopped before the first epoch ended: nothing new to report
        predictions, confidences = self._log(self.last_epoch, "validation set, the model saved")
        self.report = report_table(self.labels, predictions, self.class_names)
        self.mistakes = image_files.mistakes_table(self.names, self.labels, predictions, confidences,
                                                   self.class_names)
        log_text(self.run_log, "classification_report", self.report, self.last_epoch)
        log_text(self.run_log, "misclassified_validation_list", f"```\n{self.mistakes}\n```", self.last_epoch)


def predict(model_file, path):
    """(paths, predicted classes, their probabilities) of the images at path, by the model in model_file."""
    paths = image_files.list_images_to_predict(path)
    if not os.path.isfile(model_file):
        raise DataError(f"no model '{model_file}': train one first, or name one with --model-file")
    model, class_names = load_model(model_file)
    images, paths = image_files.read_images_to_predict(paths, model.input_shape[1])
    probabilities = model.predict(network_input(images), batch_size=32, verbose=0)
    predicted = probabilities.argmax(axis=1)
    return paths, [class_names[index] for index in predicted], probabilities.max(axis=1)
