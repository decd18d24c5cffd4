"""Photo folders in, numbers out: folders of one sub-folder per class checked, photos read, one folder split in two with
near-duplicates on one side, and new images written beside a user's, never over one."""

import concurrent.futures
import hashlib
import io
import itertools
import os
import warnings

import imagehash
import numpy as np
from PIL import Image, ImageOps
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

import runs
from runs import DataError, readable_text, warn

# The extensions flow_from_directory reads, and GIF and WebP, in any letter case.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".gif", ".webp")

# Photos up to Pillow's hard limit (179 megapixels) load without a warning; larger ones are skipped as unreadable.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


# Checking the folders, before anything slow starts.

def list_images(folder):
    """Paths, relative to folder, of its images and its sub-folders' (not hidden), in flow_from_directory's order."""
    found = []
    for root, sub_folders, names in os.walk(folder):
        sub_folders[:] = [name for name in sub_folders if not name.startswith(".")]
        found.append((root, sorted(name for name in names if not name.startswith(".")
                                   and name.lower().endswith(IMAGE_EXTENSIONS))))
    return [os.path.relpath(os.path.join(root, name), folder) for root, names in sorted(found) for name in names]


def class_folder_names(data_dir, role):
    """Sorted class sub-folder names of data_dir; role ("training", ...) is for messages."""
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise DataError(f"{role} folder '{data_dir}' is a file, not a folder: name a folder with one sub-folder of "
                        "images per class")
    if not os.path.isdir(data_dir):
        raise DataError(f"{role} folder '{data_dir}' does not exist: create it with one sub-folder of images per class"
                        + (", or hold out photos of --train-dir with --validation-split 0.2" if role == "validation"
                           else ""))
    names = sorted(name for name in os.listdir(data_dir)
                   if not name.startswith(".") and os.path.isdir(os.path.join(data_dir, name)))
    if not names:
        raise DataError(f"{role} folder '{data_dir}' has no class sub-folders: put the images of each class in a "
                        "sub-folder named after the class")
    for name in names:
        if name != readable_text(name):  # class names go into model files and TensorBoard
            raise DataError(f"{role} class folder '{os.path.join(data_dir, readable_text(name))}' has a name that is "
                            "not valid text (UTF-8): rename the folder")
    return names


def check_image_folder(data_dir, role):
    """(class names, {class: number of images}) of a folder fit to train on: two classes or more, each with images."""
    names = class_folder_names(data_dir, role)
    if len(names) < 2:
        raise DataError(f"'{data_dir}' has a single class '{names[0]}': a classifier needs at least two class "
                        "sub-folders")
    counts = {name: len(list_images(os.path.join(data_dir, name))) for name in names}
    for name, count in counts.items():
        if count == 0:
            raise DataError(f"{role} class folder '{os.path.join(data_dir, name)}' has no images: add "
                            f"{', '.join(IMAGE_EXTENSIONS)} files or remove the folder")
    return names, counts


def check_image_folders(train_dir, validation_dir, fraction=None):
    """(class names, training counts, validation counts) of two folders fit to train on; with fraction, of one."""
    if fraction:
        return (*check_image_folder(train_dir, "training"), None)
    classes = class_folder_names(train_dir, "training")
    if classes != (validation_classes := class_folder_names(validation_dir, "validation")):
        raise DataError(f"training classes {classes} in '{train_dir}' differ from validation classes "
                        f"{validation_classes} in '{validation_dir}': both folders need the same class sub-folders")
    return classes, check_image_folder(train_dir, "training")[1], check_image_folder(validation_dir, "validation")[1]


# Reading images: any photo a user keeps, upright and RGB.

def to_rgb(image):
    """Any Pillow image as 8-bit RGB: 16-bit and float pixels scaled, transparency on white."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        pixels = np.asarray(image, dtype=np.float64)
        full_scale = 65535 if image.mode.startswith("I;16") or pixels.max() > 255 else 255
        image = Image.fromarray(np.clip(pixels * (255 / full_scale), 0, 255).astype(np.uint8))
    if "A" in image.getbands() or "transparency" in image.info:
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
    return image.convert("RGB")


def why_unreadable(path, error):
    """A short reason, for a warning line, why the image at path could not be read."""
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return "the file is empty"
    if isinstance(error, Image.UnidentifiedImageError):
        return "not an image that Pillow can read"
    if isinstance(error, Image.DecompressionBombError):
        return f"more pixels than Pillow's limit of {2 * Image.MAX_IMAGE_PIXELS} against decompression bombs"
    return str(error) or type(error).__name__


def read_rgb(path):
    """The image at path, upright and RGB, full size."""
    try:
        with Image.open(path) as image:
            return to_rgb(ImageOps.exif_transpose(image))
    except Exception as error:  # Pillow raises many kinds on a damaged or foreign file
        raise DataError(f"cannot read image '{path}': {why_unreadable(path, error)}") from None


def read_image(path, image_size):
    """One image as the models see it: stretched to a square as flow_from_directory did, resized with antialiasing."""
    with Image.open(path) as image:
        image.draft("RGB", (image_size, image_size))
        upright = to_rgb(ImageOps.exif_transpose(image))
    return np.asarray(upright.resize((image_size, image_size), Image.Resampling.LANCZOS), dtype=np.uint8)


def read_images(paths, image_size):
    """(uint8 array of the images at paths that can be read, readable mask), read in parallel; others warned about."""
    images = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)

    def read_into(position):
        try:
            images[position] = read_image(paths[position], image_size)
        except Exception as error:  # any file that does not decode is skipped, whatever the reason
            return why_unreadable(paths[position], error)

    # Pillow decodes and resizes outside Python's global lock: threads use every core.
    with concurrent.futures.ThreadPoolExecutor(max_workers=runs.cores()) as pool:
        problems = list(pool.map(read_into, range(len(paths))))
    for path, problem in zip(paths, problems):
        if problem:
            warn(f"skipped '{path}': {problem}")
    readable = np.array([problem is None for problem in problems], dtype=bool)
    return (images if readable.all() else images[readable]), readable


def read_image_folder(data_dir, class_names, image_size, role):
    """(images, labels, paths) of every readable image of data_dir's class folders, in flow_from_directory's order."""
    paths, labels = [], []
    for index, class_name in enumerate(class_names):
        for name in list_images(os.path.join(data_dir, class_name)):
            paths.append(os.path.join(data_dir, class_name, name))
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


# One folder split in two, near-duplicates on one side: a photo's side is decided by a hash of its
# name and the seed, so that adding photos moves none of those already there (a shuffle would).

NEAR_DUPLICATE_BITS = 32  # of pHash's 256: measured in docs/near-duplicates.md


def check_validation_split(validation_dir, fraction, seed, default_dir):
    """The validation folder (None with --validation-split); seeds as NumPy takes them, the scripts adding epochs."""
    if not 0 <= seed < 2 ** 32 - 100_000:
        raise DataError(f"--seed {seed} must be a whole number from 0 to {2 ** 32 - 100_001}")
    if fraction is None:
        return validation_dir or default_dir
    if validation_dir is not None:
        raise DataError("--validation-dir and --validation-split cannot be used together: give --validation-split to "
                        "hold out photos of --train-dir, or --validation-dir alone")
    if not 0 < fraction < 1:
        raise DataError(f"--validation-split {fraction} must be a fraction between 0 and 1, such as 0.2")
    return None


# The parts of each image hashed, as the fractions (left, top, right, bottom) cut off: the whole, its
# centre, and the whole less a strip on one side. A copy cropped by up to 5 % matches one of them.
HASHED_PARTS = ((0, 0, 0, 0), (.02, .02, .02, .02), (.05, .05, .05, .05),
                (.05, 0, 0, 0), (0, .05, 0, 0), (0, 0, .05, 0), (0, 0, 0, .05))


def perceptual_hashes(images):
    """(images, parts, 256) booleans: imagehash's pHash of each HASHED_PARTS of each uint8 image."""
    side = images.shape[1]
    return np.array([[imagehash.phash(Image.fromarray(image[round(side * top):side - round(side * bottom),
                                                            round(side * left):side - round(side * right)]),
                                      hash_size=16).hash.ravel()
                      for left, top, right, bottom in HASHED_PARTS] for image in images])


def near_duplicates(hashes, other_hashes=None):
    """Index pairs (i, j) of near-duplicates within hashes (i < j), or of hashes and other_hashes."""
    others = hashes if other_hashes is None else other_hashes
    signs, other_signs = (np.where(bits, 1, -1).astype(np.float32) for bits in (hashes, others))
    most_agreeing = hashes.shape[-1] - 2 * NEAR_DUPLICATE_BITS  # bits that agree less those that differ
    compared = [(0, part) for part in range(len(HASHED_PARTS))] + [(part, 0) for part in range(1, len(HASHED_PARTS))]
    pairs = []
    for start in range(0, len(hashes), 1000):  # 1,000 rows at a time: little memory for any folder
        rows = signs[start:start + 1000]
        agree = np.full((len(rows), len(others)), -np.inf, dtype=np.float32)
        for part, other_part in compared:
            np.maximum(agree, rows[:, part] @ other_signs[:, other_part].T, out=agree)
        pairs += [(start + int(i), int(j)) for i, j in np.argwhere(agree >= most_agreeing)
                  if other_hashes is not None or start + i < j]
    return pairs


def held_out(data_dir, paths, labels, groups, class_names, fraction, seed):
    """Which images go to validation: those whose group's first path in its class folder hashes below fraction."""
    # The path within its class folder: a photo moved to another class keeps its side.
    keys = [os.path.relpath(path, os.path.join(data_dir, class_names[label])).replace(os.sep, "/")
            for path, label in zip(paths, labels)]
    # Each group's first key: keys in reverse order, the first overwriting the others.
    group_keys = {groups[index]: keys[index] for index in sorted(range(len(keys)), key=keys.__getitem__, reverse=True)}
    scores = {group: int.from_bytes(hashlib.sha256(f"{seed}/{key}".encode("utf-8", "surrogateescape"))
                                    .digest()[:8], "big") / 2 ** 64 for group, key in group_keys.items()}
    validation = np.array([scores[group] < fraction for group in groups], dtype=bool)
    for index, class_name in enumerate(class_names):
        sides, folder = validation[labels == index], os.path.join(data_dir, class_name)
        if len(set(groups[labels == index])) == 1 and len(sides) > 1:
            raise DataError(f"--validation-split cannot split '{folder}': its {len(sides)} readable photos are all "
                            "near-duplicates of each other (frames of a still camera?), kept together on one side; "
                            "add photos that differ, or give validation photos of their own with --validation-dir")
        if sides.all() or not sides.any():
            raise DataError(f"--validation-split {fraction} leaves no {'training' if sides.all() else 'validation'} "
                            f"image in '{folder}' ({len(sides)} readable): add images, or choose another fraction or "
                            "--seed")
    return validation


def near_duplicate_groups(hashes):
    """Each image's group of near-duplicates, joined transitively: a group number per image."""
    first, second = np.array(near_duplicates(hashes), dtype=np.int64).reshape(-1, 2).T
    graph = coo_matrix((np.ones(len(first)), (first, second)), shape=(len(hashes),) * 2)
    return connected_components(graph, directed=False)[1]


def read_training_and_validation(train_dir, validation_dir, class_names, image_size, fraction, seed):
    """(images, labels, near-duplicate groups) to train on, (images, labels, names) to validate on, the run
    folder's files."""
    images, labels, paths = read_image_folder(train_dir, class_names, image_size, "training")
    hashes = perceptual_hashes(images)
    if fraction is None:
        validation_images, validation_labels, validation_paths = read_image_folder(
            validation_dir, class_names, image_size, "validation")
        # Both folders' photos in groups: a group on both sides flatters val_accuracy.
        groups = near_duplicate_groups(np.concatenate([hashes, perceptual_hashes(validation_images)]))
        paths, all_labels = paths + validation_paths, np.concatenate([labels, validation_labels])
        side = np.arange(len(paths)) >= len(images)
        train = images, labels, groups[:len(images)]
        names = [os.path.relpath(path, validation_dir) for path in validation_paths]
        run_files = {}
    else:
        groups, all_labels = near_duplicate_groups(hashes), labels
        side = held_out(train_dir, paths, labels, groups, class_names, fraction, seed)
        train, validation_images, validation_labels = (images[~side], labels[~side], groups[~side]), images[side], \
            labels[side]
        names = [os.path.relpath(path, train_dir) for path, held in zip(paths, side) if held]
        run_files = {"validation_files.txt": "\n".join(readable_text(name) for name in names)}
    # Each group of two or more, listed once (a list of pairs grows with the square of a group's size).
    order = np.argsort(groups, kind="stable")
    members = [group for group in np.split(order, np.flatnonzero(np.diff(groups[order])) + 1) if len(group) > 1]
    is_across = [0 < side[group].sum() < len(group) for group in members]
    is_mixed = [len(set(all_labels[group])) > 1 for group in members]
    across = [group for group, chosen in zip(members, is_across) if chosen]
    mixed = [group for group, chosen in zip(members, is_mixed) if chosen]
    # A split lists every group; two folders those on both sides or in two classes, numbered as in the file.
    listed = members if fraction is not None else [
        group for group, chosen in zip(members, np.logical_or(is_across, is_mixed)) if chosen]
    numbers = {id(group): number for number, group in enumerate(listed, 1)}

    def table(chosen):
        return ["group\tpath\tclass\tside"] + [
            f"{numbers[id(group)]}\t{readable_text(paths[index])}\t{class_names[all_labels[index]]}\t"
            f"{'validation' if side[index] else 'training'}" for group in chosen for index in group]

    if fraction is None and across:
        copies = sum(side[group].sum() for group in across)
        warn(f"validation images that are near-duplicates of training images: {copies}, so val_accuracy flatters "
             "the model; move each to the side of its group, or remove it (the list is also in near_duplicates.tsv in "
             f"the TensorBoard run):\n{first_lines(table(across))}")
    elif fraction is not None:
        held, left = (dict(zip(class_names, np.bincount(of, minlength=len(class_names)).tolist()))
                      for of in (validation_labels, train[1]))
        print(f"Held out for validation: {held}; left to train on: {left}; groups of near-duplicates, each kept on one "
              f"side (near_duplicates.tsv in the TensorBoard run): {len(members)}", flush=True)
    if mixed:
        warn(f"groups of near-duplicate images in different classes: {len(mixed)}; one label in each is wrong, or the "
             f"classes are too alike to tell apart:\n{first_lines(table(mixed))}")
    return train, (validation_images, validation_labels, names), {
        **run_files, "near_duplicates.tsv": "\n".join(table(listed))}


def first_lines(lines, limit=20):
    """A table's lines as text: its heading and first limit rows, and how many more there are."""
    return "\n".join(lines[:limit + 1] + ([f"and {len(lines) - limit - 1} more"] if len(lines) > limit + 1 else []))


def list_images_to_predict(path):
    """The image at path, or every image under the folder path, in sorted path order."""
    if not os.path.exists(path):
        raise DataError(f"--predict '{path}' does not exist: name an image or a folder of images")
    paths = sorted(os.path.join(path, name) for name in list_images(path)) if os.path.isdir(path) else [path]
    if not paths:
        raise DataError(f"--predict '{path}' holds no images: give {', '.join(IMAGE_EXTENSIONS)} files")
    return paths


def save_new_file(data, folder, names):
    """Write data in folder as a new file, under the first free of names (an exclusive create); its path."""
    # An exclusive create never replaces a file, on any drive (FAT has no hard links for an atomic rename).
    with runs.stops_held():
        for name in names:
            path, created = os.path.join(folder, name), False
            try:
                with open(path, "xb") as new_file:
                    created = True
                    new_file.write(data)
                return path
            except FileExistsError:
                continue
            except OSError as error:
                if created:
                    os.unlink(path)  # its own, half-written
                raise DataError(f"cannot write in '{os.path.normpath(folder)}' ({runs.why_not_written(error)}): free "
                                "some space, or choose another folder") from None


def save_new_jpeg(image, folder, prefix):
    """Save a Pillow image as the first free '<prefix>_<number>.jpg' in folder; its path."""
    jpeg = io.BytesIO()
    image.save(jpeg, format="JPEG", quality=95)
    return save_new_file(jpeg.getvalue(), folder, (f"{prefix}_{number:04d}.jpg" for number in itertools.count(1)))
