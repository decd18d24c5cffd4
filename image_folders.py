"""Reading and checking the image folders that every script in this collection uses.

A data set is a folder with one sub-folder of images per class:

    data/train/cats/001.jpg      data/validation/cats/101.jpg
    data/train/dogs/002.png      data/validation/dogs/102.png

Class names are the sub-folder names in sorted order, as Keras'
flow_from_directory gives them; class index i is the i-th name.
"""

import itertools
import os
import shutil
import tempfile

from PIL import Image, ImageOps

# The extensions flow_from_directory reads, in any letter case.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff")


class DataError(Exception):
    """A problem with the user's folders or files, told in one line."""


def is_image_file(name):
    """True for a visible file whose extension is an image extension."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder):
    """Sorted image file names directly inside folder."""
    return sorted(name for name in os.listdir(folder)
                  if is_image_file(name) and os.path.isfile(os.path.join(folder, name)))


def class_names(data_dir, role):
    """Sorted class sub-folder names of data_dir; role ("training", ...) is for messages."""
    if not os.path.isdir(data_dir):
        raise DataError(f"{role} folder '{data_dir}' does not exist: "
                        "create it with one sub-folder of images per class")
    names = sorted(name for name in os.listdir(data_dir)
                   if not name.startswith(".") and os.path.isdir(os.path.join(data_dir, name)))
    if not names:
        raise DataError(f"{role} folder '{data_dir}' has no class sub-folders: "
                        "put the images of each class in a sub-folder named after the class")
    return names


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


def check_output_folder(path):
    """Fail now, not after an hour of training, when path's folder does not exist."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise DataError(f"cannot write '{path}': folder '{folder}' does not exist; "
                        "create it or choose another --model-file")


def open_rgb(path):
    """The image at path as an upright RGB Pillow image."""
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def _publish(write, folder, names):
    """Write a file through write(file object) under the first of names that is free.

    The data goes to a hidden temporary file first and is then hard-linked under
    its name, so an existing file is never overwritten and a run killed half-way
    never leaves half a file under a real name. Returns the path written.
    """
    descriptor, temp_path = tempfile.mkstemp(dir=folder, prefix=".partial-")
    try:
        with os.fdopen(descriptor, "wb") as temp_file:
            write(temp_file)
        for name in names:
            path = os.path.join(folder, name)
            try:
                os.link(temp_path, path)
                return path
            except FileExistsError:
                continue
        return None
    finally:
        os.unlink(temp_path)


def save_new_jpeg(image, folder, prefix):
    """Save a Pillow image as the first free '<prefix>_<number>.jpg' in folder."""
    numbered_names = (f"{prefix}_{number:04d}.jpg" for number in itertools.count(1))
    return _publish(lambda file: image.save(file, format="JPEG", quality=95), folder, numbered_names)


def copy_if_absent(source_path, folder):
    """Copy a file into folder under its own name unless that name is taken; True if copied."""
    def write(file):
        with open(source_path, "rb") as source:
            shutil.copyfileobj(source, file)
    name = os.path.basename(source_path)
    if os.path.exists(os.path.join(folder, name)):
        return False
    return _publish(write, folder, [name]) is not None
