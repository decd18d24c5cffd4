"""The plumbing the scripts of this collection share: image folders in, models out.

Checking and reading image folders, batching and augmenting the images in memory,
writing images and models without ever overwriting or truncating a file, and the
pictures and tables each run leaves in TensorBoard beside Keras' scalars.

A data set is a folder with one sub-folder of images per class:

    data/train/cats/001.jpg      data/validation/cats/101.jpg
    data/train/dogs/002.png      data/validation/dogs/102.png

Class names are the sub-folder names in sorted order, as Keras'
flow_from_directory gives them; class index i is the i-th name.

The model scripts read every image once per run, in parallel, at the size the
network takes, and keep them in memory as uint8; augmentation then runs on those
arrays inside tf.data, with the transforms of Keras' ImageDataGenerator. A file
that does not decode is skipped with a warning; every problem a user can fix is a
DataError, which the scripts print as one line.
"""

import concurrent.futures
import contextlib
import hashlib
import itertools
import json
import logging
import math
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings

# Lines TensorFlow prints to stderr as it starts, which say nothing a user must act on.
_START_UP_LINE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} "  # absl's information lines: CUDA drivers not found, CPU instructions, oneDNN
    r"|To enable the following instructions:")  # the second line of the CPU instructions one


def without_start_up_lines(text):
    """text less TensorFlow's start-up lines; a real error stays.

    Where no CUDA driver was found, TensorFlow's failed cuInit (an "E" line) only
    says that there is no GPU, so it goes too; with a driver, it is a real error.
    """
    no_gpu_driver = "Could not find cuda drivers" in text
    return "".join(line for line in text.splitlines(keepends=True)
                   if not _START_UP_LINE.match(line)
                   and not (no_gpu_driver and "failed call to cuInit" in line))


@contextlib.contextmanager
def _start_up_lines_hidden():
    """Catch what is written on file descriptor 2 inside the block; print it less start-up lines."""
    try:
        stderr_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no console, or a stream with no file
        stderr_fd = None
    if stderr_fd is None:
        yield
        return
    sys.stderr.flush()
    saved_stderr = os.dup(stderr_fd)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), stderr_fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved_stderr, stderr_fd)
            os.close(saved_stderr)
            caught.seek(0)
            sys.stderr.write(without_start_up_lines(caught.read().decode(errors="replace")))
            sys.stderr.flush()


# TensorFlow starts here, for every script (they import this module before Keras): its C++
# start-up lines, among them "failed call to cuInit" without a GPU, read like failures.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # and no C++ information lines later
with _start_up_lines_hidden():
    import tensorflow as tf
    tf.config.list_physical_devices("GPU")  # where TensorFlow looks for a GPU, and says so

import h5py  # noqa: E402 (after TensorFlow's quiet start)
import keras  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFont, ImageOps  # noqa: E402
from tensorboard.plugins.hparams import api as hparams_api  # noqa: E402

# The extensions flow_from_directory reads, and GIF and WebP, in any letter case.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".gif", ".webp")

# Photos up to Pillow's hard limit (about 179 megapixels) load without a warning;
# larger ones raise DecompressionBombError and are skipped like unreadable files.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)

# Keras 3 calls .h5 files legacy at every save; the scripts save .h5 on purpose, as in 2018.
logging.getLogger("absl").addFilter(lambda record: "considered legacy" not in record.getMessage())


# Training images are shuffled, augmented and rescaled this many at a time, then batched.
AUGMENTATION_CHUNK = 64


class DataError(Exception):
    """A problem with the user's folders or files, told in one line."""


def is_image_file(name):
    """True for a visible file whose extension is an image extension."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder):
    """Paths, relative to folder, of the images in folder and its sub-folders.

    The files flow_from_directory reads, in its order (folder by folder, sorted
    by path, then by file name), less hidden files and folders.
    """
    found = []
    for root, sub_folders, names in os.walk(folder):
        sub_folders[:] = [name for name in sub_folders if not name.startswith(".")]
        found.append((root, sorted(name for name in names if is_image_file(name))))
    return [os.path.relpath(os.path.join(root, name), folder)
            for root, names in sorted(found) for name in names]


def class_names(data_dir, role):
    """Sorted class sub-folder names of data_dir; role ("training", ...) is for messages."""
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise DataError(f"{role} folder '{data_dir}' is a file, not a folder: "
                        "name a folder with one sub-folder of images per class")
    if not os.path.isdir(data_dir):
        raise DataError(f"{role} folder '{data_dir}' does not exist: "
                        "create it with one sub-folder of images per class")
    names = sorted(name for name in os.listdir(data_dir)
                   if not name.startswith(".") and os.path.isdir(os.path.join(data_dir, name)))
    if not names:
        raise DataError(f"{role} folder '{data_dir}' has no class sub-folders: "
                        "put the images of each class in a sub-folder named after the class")
    for name in names:
        if name != readable_text(name):  # class names go into the model file and TensorBoard
            raise DataError(f"{role} class folder '{os.path.join(data_dir, readable_text(name))}' "
                            "has a name that is not valid text (UTF-8): rename the folder")
    return names


def readable_text(text):
    """text as valid Unicode: a file name's bytes that are not UTF-8 become \ufffd."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def count_images(data_dir, names, role):
    """{class name: number of images}; every class folder must hold at least one image."""
    counts = {}
    for name in names:
        class_dir = os.path.join(data_dir, name)
        counts[name] = len(list_images(class_dir))
        if counts[name] == 0:
            raise DataError(f"{role} class folder '{class_dir}' has no images: "
                            f"add {', '.join(IMAGE_EXTENSIONS)} files or remove the folder")
    return counts


def check_image_folders(train_dir, validation_dir):
    """Check a training and a validation folder before any training starts.

    Returns (class names, training counts, validation counts); raises DataError
    with a one-line explanation when the folders cannot be trained on.
    """
    train_classes = class_names(train_dir, "training")
    validation_classes = class_names(validation_dir, "validation")
    if train_classes != validation_classes:
        raise DataError(f"training classes {train_classes} in '{train_dir}' differ from "
                        f"validation classes {validation_classes} in '{validation_dir}': "
                        "both folders need the same class sub-folders")
    if len(train_classes) < 2:
        raise DataError(f"'{train_dir}' has a single class '{train_classes[0]}': "
                        "a classifier needs at least two class sub-folders")
    train_counts = count_images(train_dir, train_classes, "training")
    validation_counts = count_images(validation_dir, validation_classes, "validation")
    return train_classes, train_counts, validation_counts


def check_output_folder(path, suffix=".h5"):
    """Fail now, not after an hour of training, when a model cannot be saved as path."""
    folder = os.path.dirname(os.path.abspath(path))
    if suffix == ".h5" and (not path.endswith(".h5") or path.endswith(".weights.h5")):
        raise DataError(f"cannot save a model as '{path}': --model-file must end in .h5 "
                        "(and not .weights.h5, the name of the weights saved beside it)")
    if not path.endswith(suffix):
        raise DataError(f"cannot save a model as '{path}': --model-file must end in {suffix}")
    if not os.path.isdir(folder):
        raise DataError(f"cannot write '{path}': folder '{folder}' does not exist; "
                        "create it or choose another --model-file")
    if os.path.isdir(path):
        raise DataError(f"cannot write '{path}': it is a folder; choose another --model-file")
    if not os.access(folder, os.W_OK):
        raise DataError(f"cannot write '{path}': no permission to write in '{folder}'; "
                        "choose another --model-file")


def check_log_folder(log_dir):
    """TensorBoard fails only once training starts when its folder cannot be made."""
    if os.path.exists(log_dir) and not os.path.isdir(log_dir):
        raise DataError(f"--log-dir '{log_dir}' is a file, not a folder: choose another --log-dir")
    if os.path.isdir(log_dir) and not os.access(log_dir, os.W_OK):
        raise DataError(f"--log-dir '{log_dir}': no permission to write in it; choose another --log-dir")


def check_training_settings(epochs, batch_size, image_size):
    """Numbers that would fail only once training starts, or after it."""
    if epochs < 1 or batch_size < 1:
        raise DataError(f"--epochs {epochs} and --batch-size {batch_size} must both be 1 or more")
    # Three 3x3 convolutions, each followed by 2x2 pooling, need 22 pixels or more.
    if image_size < 22:
        raise DataError(f"--image-size {image_size} is too small: the network needs 22 pixels or more")


def check_seed(seed):
    """NumPy and TensorFlow take seeds from 0 to 2**32 - 1."""
    if not 0 <= seed < 2 ** 32 - 100_000:  # room for the epoch the scripts add on resuming
        raise DataError(f"--seed {seed} must be a whole number from 0 to {2 ** 32 - 100_001}")


def check_resume(model_file, initial_epoch, epochs):
    """Check a request to resume a saved model after initial_epoch, up to epochs."""
    if initial_epoch < 0:
        raise DataError(f"--initial-epoch {initial_epoch} must be 0 (a new model) or more")
    if epochs <= initial_epoch:
        raise DataError(f"--epochs {epochs} must be above --initial-epoch {initial_epoch}: "
                        "--epochs is the epoch to stop after, not the number of epochs to add")
    if initial_epoch == 0:
        return
    if not os.path.isfile(model_file):
        raise DataError(f"cannot resume: model file '{model_file}' does not exist; "
                        "train from the start (--initial-epoch 0) or name the saved model "
                        "with --model-file")
    recorded = saved_epoch(model_file)
    if recorded is not None and recorded != initial_epoch:
        raise DataError(f"cannot resume '{model_file}' after epoch {initial_epoch}: it holds the "
                        f"model after epoch {recorded}; use --initial-epoch {recorded}")


def check_model_run(args):
    """Every check of a model script's flags and folders, made before anything slow starts.

    args are the parsed flags the model scripts share; returns check_image_folders' result.
    """
    folders = check_image_folders(args.train_dir, args.validation_dir)
    check_output_folder(args.model_file)
    check_log_folder(args.log_dir)
    check_training_settings(args.epochs, args.batch_size, args.image_size)
    check_seed(args.seed)
    check_resume(args.model_file, args.initial_epoch, args.epochs)
    return folders


def to_rgb(image):
    """Any Pillow image as 8-bit RGB: 16-bit and float pixels scaled, transparency on white."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        pixels = np.asarray(image, dtype=np.float64)
        full_scale = 65535 if image.mode.startswith("I;16") or pixels.max() > 255 else 255
        image = Image.fromarray(np.clip(pixels * (255 / full_scale), 0, 255).astype(np.uint8))
    if "A" in image.getbands() or "transparency" in image.info:
        image = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image)
    return image.convert("RGB")


def read_rgb(path):
    """The image at path as an upright RGB Pillow image; a DataError names the file if unreadable."""
    try:
        with Image.open(path) as image:
            return to_rgb(ImageOps.exif_transpose(image))
    except Exception as error:  # Pillow raises many kinds on a damaged or foreign file
        raise DataError(f"cannot read image '{path}': {why_unreadable(path, error)}") from None


def why_unreadable(path, error):
    """A short reason, for a warning line, why the image at path could not be read."""
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return "the file is empty"
    if not os.path.exists(path):
        return "no such file"
    if isinstance(error, Image.UnidentifiedImageError):
        return "not an image that Pillow can read"
    if isinstance(error, Image.DecompressionBombError):
        return f"more pixels than Pillow's limit of {2 * Image.MAX_IMAGE_PIXELS} against decompression bombs"
    return str(error) or type(error).__name__


def warn(message):
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _new_hidden_file(folder, name):
    """Create a new, empty, hidden file in folder for name's data; returns its path.

    open(..., "xb") gives it the permissions of any new file (those the umask
    leaves, -rw-r--r-- as a rule), which it keeps when renamed or linked;
    tempfile.mkstemp would make it readable by its owner alone.
    """
    stem, suffix = os.path.splitext(name)
    if stem.endswith(".weights"):  # Keras saves weights only in files named *.weights.h5
        suffix = ".weights" + suffix
    while True:
        path = os.path.join(folder, f".{name}.partial-{secrets.token_hex(4)}{suffix}")
        try:
            with open(path, "xb"):
                return path
        except FileExistsError:
            continue


def _publish(write, folder, names):
    """Write a file through write(file object) under the first of names that is free.

    The data goes to a hidden temporary file first, and only a whole file gets a
    real name, never an existing file's: a hard link where the filesystem has
    them, or else a rename onto a new empty file claimed by an exclusive create.
    Returns the path written.
    """
    temp_path = _new_hidden_file(folder, "new")
    try:
        with open(temp_path, "wb") as temp_file:
            write(temp_file)
        for name in names:
            path = os.path.join(folder, name)
            try:
                os.link(temp_path, path)
                return path
            except FileExistsError:
                continue
            except (OSError, AttributeError, NotImplementedError):
                pass  # no hard links here (FAT and exFAT drives, some network shares)
            with _ctrl_c_held_off():  # never an empty file left under the name
                try:
                    with open(path, "xb"):  # the name is ours from here on
                        pass
                except FileExistsError:
                    continue
                os.replace(temp_path, path)
            return path
        return None
    finally:
        if os.path.exists(temp_path):
            os.unlink(temp_path)


def save_new_jpeg(image, folder, prefix):
    """Save a Pillow image as the first free '<prefix>_<number>.jpg' in folder."""
    numbered_names = (f"{prefix}_{number:04d}.jpg" for number in itertools.count(1))
    return _publish(lambda file: image.save(file, format="JPEG", quality=95), folder, numbered_names)


def copy_once(source_path, folder, name):
    """Copy a file into folder as name, unless a file of the same bytes is there already.

    If name holds another file, the copy goes under the first free one of
    '<stem>_2<ext>', '<stem>_3<ext>', ..., or is found there from an earlier copy.
    Returns the path written, or None if the copy was there already; an existing
    file is never overwritten.
    """
    stem, extension = os.path.splitext(name)
    with open(source_path, "rb") as source:
        digest = hashlib.file_digest(source, "sha256").digest()
        for number in itertools.count(1):
            candidate = name if number == 1 else f"{stem}_{number}{extension}"
            path = os.path.join(folder, candidate)
            if not os.path.exists(path):
                break
            with open(path, "rb") as existing:
                if hashlib.file_digest(existing, "sha256").digest() == digest:
                    return None
        source.seek(0)
        free_names = itertools.chain([candidate], (f"{stem}_{later}{extension}"
                                                   for later in itertools.count(number + 1)))
        return _publish(lambda file: shutil.copyfileobj(source, file), folder, free_names)


def load_image(path, image_size):
    """One image as an image_size x image_size x 3 uint8 array, the way the models see it.

    A JPEG much larger than image_size is decoded at a reduced scale (Pillow's
    draft mode), then every image is turned upright, made RGB and resized with an
    antialiasing filter, stretched to a square as flow_from_directory did.
    """
    with Image.open(path) as image:
        image.draft("RGB", (image_size, image_size))
        upright = to_rgb(ImageOps.exif_transpose(image))
    square = upright.resize((image_size, image_size), Image.Resampling.LANCZOS)
    return np.asarray(square, dtype=np.uint8)


def read_images(paths, image_size):
    """The images at paths, read in parallel: (uint8 array of the readable ones, readable mask).

    A file that cannot be read gets a warning line naming it and is left out.
    """
    images = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)

    def load_into(position):
        try:
            images[position] = load_image(paths[position], image_size)
            return None
        except Exception as error:  # any file that does not decode is skipped, whatever the reason
            return why_unreadable(paths[position], error)

    # Pillow decodes and resizes outside Python's global lock, so threads use every core
    # (os.process_cpu_count, new in Python 3.13, counts those this process may use).
    cores = (getattr(os, "process_cpu_count", None) or os.cpu_count)() or 1
    with concurrent.futures.ThreadPoolExecutor(max_workers=cores) as pool:
        problems = list(pool.map(load_into, range(len(paths))))
    for path, problem in zip(paths, problems):
        if problem:
            warn(f"skipped '{path}': {problem}")
    readable = np.array([problem is None for problem in problems], dtype=bool)
    return (images if readable.all() else images[readable]), readable


def load_images(data_dir, class_names, image_size, role):
    """Every image of data_dir's class folders, read once and in parallel.

    Returns (images, labels, paths): an (N, image_size, image_size, 3) uint8
    array, the class index of each image, and the file each came from, in class
    order and then file name order, as flow_from_directory lists them. A file
    that cannot be read is skipped with a warning; a class left without images
    is a DataError. role ("training", ...) is for messages.
    """
    paths, labels = [], []
    for index, class_name in enumerate(class_names):
        class_dir = os.path.join(data_dir, class_name)
        for name in list_images(class_dir):
            paths.append(os.path.join(class_dir, name))
            labels.append(index)
    images, readable = read_images(paths, image_size)
    if not readable.all():
        warn(f"skipped {np.sum(~readable)} of {len(paths)} {role} images that could not be read")
    labels = np.array(labels, dtype=np.int64)[readable]
    for index, class_name in enumerate(class_names):
        if not np.any(labels == index):
            raise DataError(f"{role} class folder '{os.path.join(data_dir, class_name)}' has no "
                            "readable images: replace the files warned about above")
    return images, labels, [path for path, ok in zip(paths, readable) if ok]


def load_training_and_validation(train_dir, validation_dir, class_names, image_size):
    """load_images of both folders, saying how long it took: (train images, labels, validation ...)."""
    started = time.perf_counter()
    train_images, train_labels, _ = load_images(train_dir, class_names, image_size, "training")
    validation_images, validation_labels, _ = load_images(
        validation_dir, class_names, image_size, "validation")
    print(f"Read {len(train_images) + len(validation_images)} images "
          f"in {time.perf_counter() - started:.1f} s")
    return train_images, train_labels, validation_images, validation_labels


def network_input(images):
    """uint8 images as the networks take them: floats in [0, 1], as rescale=1/255 did."""
    return tf.cast(images, tf.float32) / 255.0


def _rescaled(images, labels, num_classes):
    """network_input of the images; labels to one-hot."""
    return network_input(images), tf.one_hot(labels, num_classes)


def _batches_of(images, labels, indices):
    """Batches of images and labels picked by a dataset of index batches.

    The images stay in one TensorFlow tensor, and only indices are shuffled, so that
    the images are held once more in memory, not twice (a shuffle buffer holds copies).
    """
    images, labels = tf.constant(images), tf.constant(labels)
    return indices.map(lambda batch: (tf.gather(images, batch), tf.gather(labels, batch)))


def validation_batches(images, labels, num_classes, batch_size):
    """Batches in a fixed order, so that every epoch's val_loss is measured on the same images."""
    dataset = _batches_of(images, labels, tf.data.Dataset.range(len(images)).batch(batch_size))
    return dataset.map(lambda x, y: _rescaled(x, y, num_classes)).prefetch(tf.data.AUTOTUNE)


def training_batches(images, labels, num_classes, batch_size, seed, augmentation=None):
    """Shuffled batches, every image once per epoch, augmented with augmentation's settings.

    augmentation is a Keras ImageDataGenerator (or None for no augmentation); its
    random transforms are applied to the in-memory images by augment() below, a
    chunk of images at a time, which costs much less per image than one by one.
    """
    order = tf.data.Dataset.range(len(images))
    order = order.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    chunks = _batches_of(images, labels, order.batch(AUGMENTATION_CHUNK))
    if augmentation is not None:
        check_augmentation(augmentation)
        # One random seed per chunk makes the transforms repeatable with --seed.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        chunks = tf.data.Dataset.zip(chunks, seeds).map(
            lambda chunk, chunk_seed: (augment(chunk[0], augmentation, chunk_seed), chunk[1]),
            num_parallel_calls=tf.data.AUTOTUNE)
    chunks = chunks.map(lambda x, y: _rescaled(x, y, num_classes))
    dataset = chunks.unbatch().batch(batch_size)
    # unbatch() forgets how many batches there are; Keras needs it to end epochs quietly.
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(math.ceil(len(images) / batch_size)))
    return dataset.prefetch(tf.data.AUTOTUNE)


# ImageDataGenerator settings that augment() does not implement.
_UNSUPPORTED_SETTINGS = ("featurewise_center", "samplewise_center", "featurewise_std_normalization",
                         "samplewise_std_normalization", "zca_whitening", "channel_shift_range",
                         "preprocessing_function", "rescale")


def check_augmentation(augmentation):
    for setting in _UNSUPPORTED_SETTINGS:
        if getattr(augmentation, setting):
            raise ValueError(f"ImageDataGenerator setting {setting} is not supported in memory")
    for setting in ("width_shift_range", "height_shift_range"):
        if not 0 <= getattr(augmentation, setting) < 1:
            raise ValueError(f"{setting} must be a fraction of the image size, from 0 to 1")


def affine_transforms(size, theta, shift_x, shift_y, shear, zoom_x, zoom_y):
    """ImageDataGenerator's affine matrix for square images, one row per image.

    Rotation, then shift, shear and zoom, about the image centre; angles in
    degrees, shifts in pixels, each argument a vector with one value per image.
    Returns the 8-number transforms keras.ops.image.affine_transform takes.
    """
    count = tf.shape(theta)[0]
    zeros, ones = tf.zeros([count]), tf.ones([count])
    theta = theta * (math.pi / 180)
    shear = shear * (math.pi / 180)
    centre = size / 2 - 0.5

    def matrices(first_row, second_row):
        rows = [first_row, second_row, [zeros, zeros, ones]]
        return tf.stack([tf.stack(row, axis=-1) for row in rows], axis=-2)

    matrix = matrices([ones, zeros, ones * centre], [zeros, ones, ones * centre])
    for first_row, second_row in (
        ([tf.cos(theta), -tf.sin(theta), zeros], [tf.sin(theta), tf.cos(theta), zeros]),
        ([ones, zeros, shift_x], [zeros, ones, shift_y]),
        ([ones, -tf.sin(shear), zeros], [zeros, tf.cos(shear), zeros]),
        ([zoom_x, zeros, zeros], [zeros, zoom_y, zeros]),
        ([ones, zeros, -ones * centre], [zeros, ones, -ones * centre]),
    ):
        matrix = tf.matmul(matrix, matrices(first_row, second_row))
    return tf.concat([tf.reshape(matrix, [-1, 9])[:, :6], tf.zeros([count, 2])], axis=1)


def augment(images, augmentation, seed):
    """Random transforms of a batch of square images, as ImageDataGenerator.random_transform.

    The same random ranges, the same affine matrix and the same fill mode as
    ImageDataGenerator, with bilinear interpolation like its scipy transform, but
    applied to a whole batch at once in TensorFlow's threads. brightness_range
    multiplies the pixel values, without the contrast stretch ImageDataGenerator
    adds. Returns float32 pixel values from 0 to 255.
    """
    count = tf.shape(images)[0]
    size = images.shape[1]
    seeds = iter(tf.unstack(tf.random.experimental.stateless_split(seed, num=8)))

    def uniform(low, high):
        return tf.random.stateless_uniform([count], next(seeds), minval=low, maxval=high)

    # The draws of ImageDataGenerator.get_random_transform; its "height" shift moves along x.
    transforms = affine_transforms(
        size,
        theta=uniform(-augmentation.rotation_range, augmentation.rotation_range),
        shift_x=uniform(-augmentation.height_shift_range, augmentation.height_shift_range) * size,
        shift_y=uniform(-augmentation.width_shift_range, augmentation.width_shift_range) * size,
        shear=uniform(-augmentation.shear_range, augmentation.shear_range),
        zoom_x=uniform(*augmentation.zoom_range),
        zoom_y=uniform(*augmentation.zoom_range),
    )
    transformed = keras.ops.image.affine_transform(
        tf.cast(images, tf.float32), transforms, interpolation="bilinear",
        fill_mode=augmentation.fill_mode, fill_value=augmentation.cval)

    for enabled, axis in ((augmentation.horizontal_flip, 2), (augmentation.vertical_flip, 1)):
        if enabled:
            flip = uniform(0.0, 1.0) < 0.5
            transformed = tf.where(flip[:, None, None, None], tf.reverse(transformed, [axis]), transformed)
    if augmentation.brightness_range is not None:
        brightness = uniform(*augmentation.brightness_range)
        transformed = tf.clip_by_value(transformed * brightness[:, None, None, None], 0, 255)
    return transformed


@contextlib.contextmanager
def _ctrl_c_held_off():
    """Ctrl-C is ignored inside the block, which must not be cut half-way (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous_handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous_handler)


def write_atomically(saves):
    """Write a set of files, each through its save(temporary path), then put them all in place.

    saves is {path: save}. Every file is first written whole under a hidden name
    in its own folder; only then are they renamed over their paths, one right
    after the other, with Ctrl-C held off: a crash or Ctrl-C while saving leaves
    the previous set whole, never a truncated file or a mix of old and new.
    """
    temp_paths = {}
    with _ctrl_c_held_off():
        try:
            for path, save in saves.items():
                folder, name = os.path.split(os.path.abspath(path))
                temp_paths[path] = _new_hidden_file(folder, name)
                save(temp_paths[path])
            for path, temp_path in temp_paths.items():
                os.replace(temp_path, path)
        finally:
            for temp_path in temp_paths.values():
                if os.path.exists(temp_path):
                    os.unlink(temp_path)


def weights_file(model_file):
    """Where the weights of the model in model_file go: <name>.weights.h5 beside it."""
    return os.path.splitext(model_file)[0] + ".weights.h5"


def model_saves(model, model_file, class_names, epoch=None, metrics=None, weights=None):
    """write_atomically's {path: save} for model as model_file, with its weights beside it.

    The class names go in the .h5 file's attributes, so that --predict can name
    the classes without the training folders, and so do the epoch the weights
    come from and its metrics (loss, val_loss, ...), when given. weights, if
    given, are saved instead of the model's own, which it keeps.
    """
    def with_weights(save):
        if weights is None:
            return save

        def save_with_weights(path):
            own_weights = model.get_weights()
            model.set_weights(weights)
            try:
                save(path)
            finally:
                model.set_weights(own_weights)
        return save_with_weights

    def save_with_class_names(path):
        model.save(path)
        with h5py.File(path, "a") as saved:
            saved.attrs["class_names"] = json.dumps(list(class_names))
            if epoch is not None:
                saved.attrs["epoch"] = epoch
                saved.attrs["metrics"] = json.dumps(metrics)

    return {model_file: with_weights(save_with_class_names),
            weights_file(model_file): with_weights(model.save_weights)}


def save_model(model, model_file, class_names, epoch=None, metrics=None):
    """Save model as model_file, with class_names, and its weights beside it; returns both paths."""
    saves = model_saves(model, model_file, class_names, epoch, metrics)
    write_atomically(saves)
    return list(saves)


def best_epoch_file(model_file):
    """Where training saves its epoch of lowest val_loss, beside model_file: <name>.best.h5."""
    return os.path.splitext(model_file)[0] + ".best.h5"


class BestEpoch(keras.callbacks.Callback):
    """Keep the weights of the epoch with the lowest val_loss, to save beside the last epoch.

    epoch counts from 1; metrics are Keras' logs of that epoch. A resumed run starts
    from the best epoch saved before, so that it replaces it only with a better one.
    """

    def __init__(self, epoch=None, metrics=None, weights=None):
        super().__init__()
        self.epoch, self.metrics, self.weights = epoch, metrics, weights

    def on_epoch_end(self, epoch, logs=None):
        # A NaN val_loss is never best, and a NaN kept from before is beaten by any number.
        if math.isfinite(logs["val_loss"]) and (
                self.metrics is None or not logs["val_loss"] >= self.metrics.get("val_loss", math.nan)):
            self.epoch, self.weights = epoch + 1, self.model.get_weights()
            self.metrics = {name: float(value) for name, value in logs.items()}


def resume_run(model_file, image_size, num_classes, compile_model):
    """Go on with a run saved by save_last_and_best: (compiled model, BestEpoch so far).

    The model is model_file's, with its optimizer state, compiled by
    compile_model(model); the BestEpoch is the one saved beside it, if any.
    """
    model = load_model_to_resume(model_file, image_size, num_classes)
    compile_model(model)
    restore_optimizer_state(model, model_file)
    best_file = best_epoch_file(model_file)
    if not os.path.isfile(best_file):
        return model, BestEpoch()
    try:
        with h5py.File(best_file, "r") as saved:
            if "metrics" not in saved.attrs:
                return model, BestEpoch()
            epoch, metrics = int(saved.attrs["epoch"]), json.loads(saved.attrs["metrics"])
    except (OSError, ValueError) as error:  # h5py's OSError on a file that is not HDF5
        raise DataError(f"cannot resume: the best epoch '{best_file}' is damaged ({error}); "
                        "move it away to resume without it") from None
    best_weights = load_model_to_resume(best_file, image_size, num_classes).get_weights()
    return model, BestEpoch(epoch, metrics, best_weights)


def save_last_and_best(model, model_file, class_names, best_epoch, last_epoch, last_metrics):
    """Save the last epoch as model_file, and the epoch of lowest val_loss as <name>.best.h5.

    model holds the last epoch's weights (epoch last_epoch, counted from 1, whose
    Keras logs are last_metrics) and keeps them. All four files are replaced
    together (write_atomically). Returns the files written.
    """
    saves = model_saves(model, model_file, class_names, last_epoch, last_metrics)
    if best_epoch.weights is not None:
        saves.update(model_saves(model, best_epoch_file(model_file), class_names, best_epoch.epoch,
                                 best_epoch.metrics, weights=best_epoch.weights))
    write_atomically(saves)
    return list(saves)


def save_finished_run(model, model_file, class_names, best_epoch, history, initial_epoch):
    """save_last_and_best after model.fit, saying what was saved; returns the last epoch's logs.

    history is fit's History; initial_epoch is the epoch the run started after.
    """
    last_metrics = {name: float(values[-1]) for name, values in history.history.items()}
    saved_files = save_last_and_best(model, model_file, class_names, best_epoch,
                                     initial_epoch + len(history.epoch), last_metrics)
    print(f"Saved {', '.join(saved_files)}")
    if best_epoch.weights is None:
        print("No epoch had a val_loss that is a number: no best epoch saved")
    else:
        print(f"Lowest val_loss: epoch {best_epoch.epoch}, val_loss {best_epoch.metrics['val_loss']:.4f}, "
              f"val_accuracy {best_epoch.metrics['val_accuracy']:.4f}, saved as "
              f"{best_epoch_file(model_file)}")
    return last_metrics


def saved_epoch(model_file):
    """The epoch recorded in model_file by save_last_and_best, or None if it records none."""
    try:
        with h5py.File(model_file, "r") as saved:
            return int(saved.attrs["epoch"]) if "epoch" in saved.attrs else None
    except (OSError, ValueError) as error:  # h5py's OSError on a file that is not HDF5
        raise DataError(f"cannot resume: '{model_file}' is not a Keras model saved by these "
                        f"scripts ({error}); name another with --model-file") from None


def load_model_to_resume(model_file, image_size, num_classes):
    """The model saved in model_file, not compiled, checked against the data's shapes."""
    try:
        model = keras.models.load_model(model_file, compile=False)
    except Exception as error:  # h5py and Keras raise many kinds on a file that is not a model
        raise DataError(f"cannot resume: '{model_file}' is not a Keras model saved by these "
                        f"scripts ({type(error).__name__}: {error})") from None
    expected_shape = (None, image_size, image_size, 3)
    if model.input_shape != expected_shape or model.output_shape != (None, num_classes):
        raise DataError(f"cannot resume '{model_file}': it takes {model.input_shape} and gives "
                        f"{model.output_shape}, but the data needs {expected_shape} and "
                        f"{num_classes} classes")
    return model


def restore_optimizer_state(model, model_file):
    """Read the optimizer's accumulators back from model_file into model's compiled optimizer.

    keras.models.load_model restores an .h5 model's weights, but not the optimizer
    state of a Sequential model, without which a resumed run would not go on where
    the saved one stopped.
    """
    with h5py.File(model_file, "r") as saved:
        if "optimizer_weights" in saved:
            state = saved["optimizer_weights"]
            model.optimizer.build(model.trainable_variables)
            model.optimizer.set_weights([state[name][()] for name in state.attrs["weight_names"]])


class EpochInterrupted(Exception):
    """Ctrl-C during an epoch's training steps: fit is left before the epoch is validated or logged."""


class StopOnCtrlC(keras.callbacks.Callback):
    """Turn Ctrl-C during fit into a clean stop that keeps complete epochs only.

    A KeyboardInterrupt raised at any point inside TensorFlow can be lost or leave
    it half-way through a step; instead the first Ctrl-C is noted, and:
    - during an epoch's training steps, the next step's end raises EpochInterrupted,
      so that Keras neither validates nor logs the half epoch; restore_last_epoch()
      then puts back the weights and optimizer state of the last complete epoch;
    - during validation, the epoch is complete: it ends as usual, then fit stops.
    A second Ctrl-C interrupts at once. Put this callback last, after any that
    change the optimizer at the end of an epoch (ReduceLROnPlateau).
    """

    def __init__(self, initial_epoch):
        super().__init__()
        self.completed_epochs = initial_epoch
        self.last_epoch_logs = None
        self.interrupted = False
        self._last_epoch_state = None

    def on_train_begin(self, logs=None):
        signal.signal(signal.SIGINT, self.request_stop)

    def request_stop(self, signal_number, frame):
        self.interrupted = True
        self.model.stop_training = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("\nCtrl-C: stopping; the epochs completed so far will be saved. "
              "Ctrl-C again quits without saving.", flush=True)

    def on_train_batch_end(self, batch, logs=None):
        if self.interrupted:
            raise EpochInterrupted

    def on_epoch_end(self, epoch, logs=None):
        self.completed_epochs, self.last_epoch_logs = epoch + 1, dict(logs)
        self._last_epoch_state = (self.model.get_weights(),
                                  [variable.numpy() for variable in self.model.optimizer.variables])

    def restore_last_epoch(self):
        """Back to the weights and optimizer state at the end of the last complete epoch, if any."""
        if self._last_epoch_state is not None:
            weights, optimizer_state = self._last_epoch_state
            self.model.set_weights(weights)
            for variable, value in zip(self.model.optimizer.variables, optimizer_state):
                variable.assign(value)

    def on_train_end(self, logs=None):
        signal.signal(signal.SIGINT, signal.default_int_handler)


def partial_file(model_file):
    """Where an interrupted run is saved, beside model_file: <name>.partial.h5."""
    return os.path.splitext(model_file)[0] + ".partial.h5"


def command_line(script, options):
    """The command that runs script with options, quoted for this system's shell.

    options is {name: value} as argparse keeps them ("model_file" for --model-file);
    those that are None are left out.
    """
    words = ["python", script] + [str(word) for name, value in options.items() if value is not None
                                  for word in (f"--{name.replace('_', '-')}", value)]
    return subprocess.list2cmdline(words) if os.name == "nt" else shlex.join(words)


def save_interrupted_run(model, model_file, class_names, best_epoch, stop_on_ctrl_c, script, options):
    """After Ctrl-C: save the complete epochs as <name>.partial.h5; returns what to tell the user.

    model holds the last complete epoch (StopOnCtrlC.restore_last_epoch). script
    and options (the run's flags, as command_line takes them) make the command
    printed to go on: every setting of this run, with the model to resume.
    """
    initial_epoch, completed = options["initial_epoch"], stop_on_ctrl_c.completed_epochs
    if completed == initial_epoch:
        if initial_epoch == 0:
            return ("Interrupted before the end of epoch 1; nothing saved. To start again: "
                    + command_line(script, options))
        return (f"Interrupted before the end of epoch {completed + 1}; nothing new to save: "
                f"{model_file} still holds epoch {completed}. To go on: "
                + command_line(script, options))
    saved_file = partial_file(model_file)
    saved_files = save_last_and_best(model, saved_file, class_names, best_epoch, completed,
                                     stop_on_ctrl_c.last_epoch_logs)
    best = "" if best_epoch.weights is None else f" (lowest val_loss: epoch {best_epoch.epoch})"
    go_on = command_line(script, {**options, "model_file": saved_file, "initial_epoch": completed})
    return f"Interrupted after epoch {completed}; saved {', '.join(saved_files)}{best}. To go on: {go_on}"


def new_run_folder(log_dir, name):
    """Make and return a new TensorBoard run folder, <log_dir>/<name>-<date>-<time>.

    os.mkdir makes a folder or fails if it exists, in one step, so that two runs
    started in the same second (a sweep in a shell loop) never share one: the
    second gets -2 after the time, the third -3, and so on.
    """
    stamp = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        os.makedirs(log_dir, exist_ok=True)
        for folder in itertools.chain([stamp], (f"{stamp}-{number}" for number in itertools.count(2))):
            try:
                os.mkdir(os.path.join(log_dir, folder))
                return os.path.join(log_dir, folder)
            except FileExistsError:
                continue
    except OSError as error:
        raise DataError(f"cannot make a TensorBoard run folder in '{log_dir}' "
                        f"({error.strerror or error}): choose another --log-dir") from None


# TensorBoard: Keras writes each epoch's scalars in <run>/train and <run>/validation;
# the scripts write the rest (settings, pictures, tables) in <run> itself.

def log_hparams(run_log, run_dir, hparams):
    """Record the run's settings for TensorBoard's HParams dashboard, under the run's name.

    run_log is the summary writer of the folder run_dir; the dashboard shows the last
    value of every scalar of the run's train/ and validation/ folders beside the settings.
    """
    hparams = {name: readable_text(value) if isinstance(value, str) else value
               for name, value in hparams.items()}  # folder names may hold any bytes
    with run_log.as_default():
        hparams_api.hparams(hparams, trial_id=readable_text(os.path.basename(run_dir)))
    run_log.flush()


def images_per_class(class_names, labels):
    """'apple 8, berry 4': the number of images of each class, for the HParams table."""
    counts = np.bincount(labels, minlength=len(class_names))
    return ", ".join(f"{name} {count}" for name, count in zip(class_names, counts))


def training_hparams(args, model, class_names, train_labels):
    """The settings every CNN run records: its data, and how it was trained.

    args are the model scripts' shared flags; model is compiled.
    """
    return {
        "train_dir": args.train_dir,
        "validation_dir": args.validation_dir,
        "train_images": len(train_labels),
        "images_per_class": images_per_class(class_names, train_labels),
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "initial_epoch": args.initial_epoch,
        "optimizer": type(model.optimizer).__name__,
        "learning_rate": float(model.optimizer.learning_rate),
        "seed": args.seed,
    }


def log_picture(run_log, tag, picture, step, description):
    """One RGB picture (a PIL image) as a TensorBoard image."""
    with run_log.as_default():
        tf.summary.image(tag, np.asarray(picture)[None], step=step, description=description)
    run_log.flush()


def log_text(run_log, tag, markdown, step):
    with run_log.as_default():
        tf.summary.text(tag, markdown, step=step)
    run_log.flush()


def picture_grid(pictures, captions, columns, tile=160):
    """Pictures side by side, columns to a row, each fitted in a tile x tile square above its caption."""
    font = ImageFont.load_default(size=12)
    caption_height = 18
    rows = math.ceil(len(pictures) / columns)
    grid = Image.new("RGB", (columns * tile, rows * (tile + caption_height)), "white")
    draw = ImageDraw.Draw(grid)
    for number, (picture, caption) in enumerate(zip(pictures, captions)):
        left, top = (number % columns) * tile, (number // columns) * (tile + caption_height)
        fitted = ImageOps.contain(picture.convert("RGB"), (tile - 4, tile - 4), Image.Resampling.BICUBIC)
        grid.paste(fitted, (left + (tile - fitted.width) // 2, top + (tile - fitted.height) // 2))
        draw.text((left + tile // 2, top + tile + caption_height // 2),
                  _shortened(caption, font, tile - 4), fill="black", font=font, anchor="mm")
    return grid


def _shortened(text, font, width):
    """text, cut with an ellipsis to fit in width pixels."""
    while font.getlength(text) > width and len(text) > 1:
        text = text[:-2] + "\u2026"
    return text


def log_training_images(run_log, images, labels, class_names, augmentation, seed, step, count=16):
    """A grid of training images as the network gets them: augmented (if augmentation) and resized.

    The first images of each class in turn, so that every class shows.
    """
    by_class = [np.flatnonzero(labels == index) for index in range(len(class_names))]
    picked = [index for group in itertools.zip_longest(*by_class) for index in group
              if index is not None][:count]
    batch = images[picked]
    if augmentation is not None:
        batch = augment(batch, augmentation, tf.constant([seed, 0]))
    pictures = [Image.fromarray(np.asarray(image).round().astype(np.uint8)) for image in batch]
    captions = [class_names[labels[index]] for index in picked]
    tag = "augmented_training_images" if augmentation is not None else "training_images"
    log_picture(run_log, tag, picture_grid(pictures, captions, columns=4), step,
                "What the network is trained on: training images at the size it takes"
                + (", after random augmentation." if augmentation is not None else ", not augmented."))


def confusion_matrix(labels, predictions, num_classes):
    """counts[true class, predicted class]."""
    return np.bincount(np.asarray(labels) * num_classes + np.asarray(predictions),
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def draw_confusion_matrix(counts, class_names, title):
    """The confusion matrix as a picture: one row per true class, shaded by the row's share."""
    font = ImageFont.load_default(size=14)
    names = [_shortened(name, font, 150) for name in class_names]
    widest_name = max(font.getlength(name) for name in names)
    cell = max(64, int(widest_name) + 12)
    left = int(max(widest_name, font.getlength("true class"))) + 20  # room for the row names
    top = 80  # room for the title and the column names
    matrix_size = len(names) * cell
    width = max(left + matrix_size, int(font.getlength(title))) + 20
    picture = Image.new("RGB", (width, top + matrix_size + 12), "white")
    draw = ImageDraw.Draw(picture)
    draw.text((10, 8), title, fill="black", font=font)
    draw.text((left + matrix_size // 2, 34), "predicted class", fill="black", font=font, anchor="mt")
    draw.text((left - 10, top - 6), "true class", fill="black", font=font, anchor="rb")
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    for row, name in enumerate(names):
        draw.text((left - 10, top + row * cell + cell // 2), name, fill="black", font=font, anchor="rm")
        draw.text((left + row * cell + cell // 2, top - 6), name, fill="black", font=font, anchor="mb")
        for column in range(len(names)):
            x, y, share = left + column * cell, top + row * cell, shares[row, column]
            shade = tuple(int(255 - share * (255 - channel)) for channel in (31, 119, 180))
            draw.rectangle([x, y, x + cell, y + cell], fill=shade, outline="grey")
            draw.text((x + cell // 2, y + cell // 2), str(counts[row, column]),
                      fill="white" if share > 0.5 else "black", font=font, anchor="mm")
    return picture


def classification_report(counts, class_names):
    """Per-class precision, recall and support from a confusion matrix, as a Markdown table."""
    lines = ["| class | precision | recall | support |", "|---|---|---|---|"]
    for index, name in enumerate(class_names):
        predicted, support = counts[:, index].sum(), counts[index].sum()
        precision = f"{counts[index, index] / predicted:.3f}" if predicted else "n/a"
        recall = f"{counts[index, index] / support:.3f}" if support else "n/a"
        lines.append(f"| {name} | {precision} | {recall} | {support} |")
    lines.append(f"| all: accuracy {np.trace(counts) / max(counts.sum(), 1):.3f} | | | {counts.sum()} |")
    return "\n".join(lines)


class ValidationReport(keras.callbacks.Callback):
    """Log the validation set's confusion matrix every few epochs and, at the end, with a report.

    batches are validation_batches(), in the order of labels. At the end of training
    (after the last epoch, or a Ctrl-C) it also writes per-class precision, recall
    and support as a TensorBoard text, and keeps that table in self.report.
    """

    def __init__(self, run_log, batches, labels, class_names, every):
        super().__init__()
        self.run_log, self.batches, self.labels = run_log, batches, labels
        self.class_names, self.every = class_names, every
        self.last_epoch, self.counts, self.report = None, None, None

    def _log_confusion_matrix(self, epoch):
        predictions = self.model.predict(self.batches, verbose=0).argmax(axis=1)
        self.counts = confusion_matrix(self.labels, predictions, len(self.class_names))
        picture = draw_confusion_matrix(self.counts, self.class_names,
                                        f"Validation set after epoch {epoch + 1}")
        log_picture(self.run_log, "confusion_matrix", picture, epoch,
                    "Validation images by true class (rows) and predicted class (columns).")

    def on_epoch_end(self, epoch, logs=None):
        self.last_epoch = epoch
        if (epoch + 1) % self.every == 0:
            self._log_confusion_matrix(epoch)

    def on_train_end(self, logs=None):
        if self.last_epoch is None:
            return  # stopped before the first epoch ended: nothing new to report
        if (self.last_epoch + 1) % self.every != 0:
            self._log_confusion_matrix(self.last_epoch)
        self.report = classification_report(self.counts, self.class_names)
        log_text(self.run_log, "classification_report", self.report, self.last_epoch)


# --predict: classify new photos with a saved model.

def list_images_to_predict(path):
    """The image at path, or every image under the folder path, in sorted path order."""
    if os.path.isdir(path):
        paths = sorted(os.path.join(path, name) for name in list_images(path))
    elif os.path.isfile(path):
        paths = [path]
    else:
        raise DataError(f"--predict '{path}' does not exist: name an image or a folder of images")
    if not paths:
        raise DataError(f"--predict '{path}' holds no images: give {', '.join(IMAGE_EXTENSIONS)} files")
    return paths


def read_images_to_predict(paths, image_size):
    """(images, paths) of the images at paths that can be read, read as for training."""
    images, readable = read_images(paths, image_size)
    if not readable.any():
        raise DataError("none of the images to predict can be read: see the warnings above")
    return images, [path for path, ok in zip(paths, readable) if ok]


def print_predictions(paths, predictions, probabilities, class_names):
    """One line per image: path, predicted class and its probability, tab-separated.

    predictions are class indices; probabilities has one row per image, one column per class.
    """
    for path, predicted, row in zip(paths, predictions, probabilities):
        print(f"{path}\t{class_names[predicted]}\t{row[predicted]:.4f}")


def load_class_names(model_file):
    """The class names save_model stored in model_file."""
    try:
        with h5py.File(model_file, "r") as saved:
            return json.loads(saved.attrs["class_names"])
    except (OSError, KeyError, ValueError):
        raise DataError(f"'{model_file}' holds no class names: it was not saved by these "
                        "scripts; train it again, or name another with --model-file") from None


def predict_with_saved_model(model_file, path):
    """Classify the image or folder at path with the Keras model saved in model_file."""
    paths = list_images_to_predict(path)
    if not os.path.isfile(model_file):
        raise DataError(f"no model '{model_file}': train one first, or name one with --model-file")
    class_names = load_class_names(model_file)
    try:
        model = keras.models.load_model(model_file, compile=False)
    except Exception as error:  # h5py and Keras raise many kinds on a damaged model file
        raise DataError(f"cannot load the model in '{model_file}' ({type(error).__name__}: "
                        f"{error}): train it again, or name another with --model-file") from None
    images, paths = read_images_to_predict(paths, model.input_shape[1])
    # The training preprocessing: resized as above, then rescaled as in training.
    probabilities = model.predict(network_input(images), batch_size=32, verbose=0)
    print_predictions(paths, probabilities.argmax(axis=1), probabilities, class_names)
