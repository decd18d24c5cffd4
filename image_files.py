"""Image folders in, files out: the plumbing every script shares, without TensorFlow.

A data set is a folder with one sub-folder of images per class (data/train/cats/001.jpg),
the class names being the sub-folder names in sorted order, as flow_from_directory has them.
Names: read_* read images, save_* write files (never over one, never half of one), check_*
raise DataError, a problem the user can fix, told in one line.

Import it first (keras_tools does): from then on a stop, Ctrl-C, SIGTERM or SIGHUP, is a
KeyboardInterrupt each script reports in one line, even while the slow modules load.
"""

import contextlib
import os
import signal
import sys
import threading

# Stops. Ctrl-C (SIGINT), SIGTERM (kill, docker stop, timeout, a job scheduler) and SIGHUP (a
# closed terminal, a dropped ssh session) all raise KeyboardInterrupt, Stopped for the last two,
# so that the scripts handle them alike. SIGHUP is not on Windows.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
_stops_received = []  # signal numbers, in order: a stop that a library turned into another error is known


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, stopping a script as Ctrl-C does."""

    def __init__(self, signal_number):
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


def signal_of(stop):
    """The number of the signal a KeyboardInterrupt stands for: SIGINT's unless it is a Stopped."""
    return getattr(stop, "signal_number", signal.SIGINT)


def stop_name(signal_number):
    return "Ctrl-C" if signal_number == signal.SIGINT else signal.Signals(signal_number).name


def after_hang_up(signal_number):
    """After SIGHUP from a closed terminal, writing to it fails (EIO): what the script still
    prints goes nowhere instead, so that it can save and exit. Output to a terminal still open
    (`kill -HUP`), a file or a pipe stays."""
    if signal_number != getattr(signal, "SIGHUP", None):
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):  # no console at all
            if stream.fileno() in _TERMINALS and not os.isatty(stream.fileno()):  # a terminal, hung up
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, stream.fileno())
                os.close(null)


def handle_stops(handler, signal_numbers=STOP_SIGNALS):
    """Let handler(signal number) take the stop signals, a hung-up terminal silenced first;
    returns the handlers it replaces, for restore_handlers. Main thread only, as Python's signals."""
    def on_stop(signal_number, frame):
        after_hang_up(signal_number)
        handler(signal_number)

    return {number: signal.signal(number, on_stop) for number in signal_numbers}


def restore_handlers(previous):
    """Put back the handlers handle_stops replaced."""
    for number, handler in previous.items():
        signal.signal(number, signal.SIG_DFL if handler is None else handler)  # None: not set from Python


def _raise_stop(signal_number):
    _stops_received.append(signal_number)
    raise KeyboardInterrupt if signal_number == signal.SIGINT else Stopped(signal_number)


def exit_stopped(message, signal_number):
    """End a script after a stop: message on stderr, and the status a shell gives a process the
    signal ended, 128 + its number (130 after Ctrl-C, 143 after SIGTERM, 129 after SIGHUP)."""
    with contextlib.suppress(OSError):
        print(readable_text(message), file=sys.stderr, flush=True)
    sys.exit(128 + signal_number)


def _one_line_for_a_stop(kind, error, trace):
    """sys.excepthook: a stop before a script's own handling starts (its modules loading, the
    first seconds) is one line, not a traceback, even where a module turned it into an
    ImportError; any other error is printed as Python does."""
    if not (issubclass(kind, KeyboardInterrupt) or _stops_received):
        return sys.__excepthook__(kind, error, trace)
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        print(f"{os.path.basename(sys.argv[0])}: interrupted while starting; nothing done",
              file=sys.stderr, flush=True)
    os._exit(128 + (_stops_received or [signal_of(error)])[0])  # sys.exit is not honoured here


@contextlib.contextmanager
def stops_held_off():
    """Stops arriving in the block, which must not be cut half-way, are noted, not acted on: it
    yields the list of their signal numbers, for the caller to act on once the block is done."""
    held = []
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield held
        return
    previous = handle_stops(held.append)
    try:
        yield held
    finally:
        restore_handlers(previous)


_TERMINALS = {number for number in (1, 2) if os.isatty(number)}  # standard output and error, at the start
if threading.current_thread() is threading.main_thread():
    # Left ignored where ignored: nohup's SIGHUP, a background job's SIGINT.
    handle_stops(_raise_stop, [number for number in STOP_SIGNALS if signal.getsignal(number) is not signal.SIG_IGN])
    sys.excepthook = _one_line_for_a_stop
# File names printed may hold bytes that are not text (old archives): never a crash for that.
with contextlib.suppress(AttributeError, ValueError):
    sys.stdout.reconfigure(errors="replace")

# The other modules after the stops are handled: loading them takes a while.
import concurrent.futures  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import itertools  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFont, ImageOps  # noqa: E402

# The extensions flow_from_directory reads, and GIF and WebP, in any letter case.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".gif", ".webp")

# Photos up to Pillow's hard limit (about 179 megapixels) load without a warning;
# larger ones raise DecompressionBombError and are skipped like unreadable files.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


class DataError(Exception):
    """A problem with the user's folders, files or settings, told in one line."""


def warn(message):
    print(f"warning: {readable_text(message)}", file=sys.stderr, flush=True)


def notice(message):
    """A line for the user while the script works, at once."""
    print(readable_text(message), flush=True)


def readable_text(text):
    """text as valid Unicode: the bytes of a file name that are not UTF-8 become \ufffd."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def why_not_written(error):
    """The reason an OSError, or h5py's RuntimeError, gives for a file not written, in a few words."""
    if getattr(error, "errno", None):
        return os.strerror(error.errno)
    found = re.search(r"error message = '([^']*)'", str(error))  # h5py's, inside a longer text
    return found.group(1) if found else str(error).splitlines()[0]


# Checking folders and settings, before anything slow starts.

def list_images(folder):
    """Paths, relative to folder, of its images and its sub-folders', less hidden ones, in
    flow_from_directory's order."""
    found = []
    for root, sub_folders, names in os.walk(folder):
        sub_folders[:] = [name for name in sub_folders if not name.startswith(".")]
        found.append((root, sorted(name for name in names if not name.startswith(".")
                                   and name.lower().endswith(IMAGE_EXTENSIONS))))
    return [os.path.relpath(os.path.join(root, name), folder) for root, names in sorted(found)
            for name in names]


def class_names(data_dir, role):
    """Sorted class sub-folder names of data_dir; role ("training", ...) is for messages."""
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise DataError(f"{role} folder '{data_dir}' is a file, not a folder: "
                        "name a folder with one sub-folder of images per class")
    if not os.path.isdir(data_dir):
        raise DataError(f"{role} folder '{data_dir}' does not exist: create it with one sub-folder of images "
                        "per class" + (", or hold out photos of --train-dir with --validation-split 0.2"
                                       if role == "validation" else ""))
    names = sorted(name for name in os.listdir(data_dir)
                   if not name.startswith(".") and os.path.isdir(os.path.join(data_dir, name)))
    if not names:
        raise DataError(f"{role} folder '{data_dir}' has no class sub-folders: "
                        "put the images of each class in a sub-folder named after the class")
    for name in names:
        if name != readable_text(name):  # class names go into model files and TensorBoard
            raise DataError(f"{role} class folder '{os.path.join(data_dir, readable_text(name))}' "
                            "has a name that is not valid text (UTF-8): rename the folder")
    return names


def check_image_folder(data_dir, role):
    """(class names, {class: number of images}) of a folder fit to train on: two classes or more,
    each with images; role ("training", ...) is for messages."""
    names = class_names(data_dir, role)
    if len(names) < 2:
        raise DataError(f"'{data_dir}' has a single class '{names[0]}': "
                        "a classifier needs at least two class sub-folders")
    counts = {name: len(list_images(os.path.join(data_dir, name))) for name in names}
    for name, count in counts.items():
        if count == 0:
            raise DataError(f"{role} class folder '{os.path.join(data_dir, name)}' has no images: "
                            f"add {', '.join(IMAGE_EXTENSIONS)} files or remove the folder")
    return names, counts


def check_image_folders(train_dir, validation_dir, fraction=None):
    """(class names, training counts, validation counts) of two folders fit to train on; with
    fraction (--validation-split), of train_dir alone, the validation counts told in words."""
    if fraction:
        return (*check_image_folder(train_dir, "training"), f"{fraction:.0%} of each class above, by name and --seed")
    train_classes = class_names(train_dir, "training")
    validation_classes = class_names(validation_dir, "validation")
    if train_classes != validation_classes:
        raise DataError(f"training classes {train_classes} in '{train_dir}' differ from "
                        f"validation classes {validation_classes} in '{validation_dir}': "
                        "both folders need the same class sub-folders")
    _, train_counts = check_image_folder(train_dir, "training")
    _, validation_counts = check_image_folder(validation_dir, "validation")
    return train_classes, train_counts, validation_counts


def check_output_file(path, suffix):
    """Fail now, not after an hour of training, when a model cannot be saved as path."""
    folder = os.path.dirname(os.path.abspath(path))
    if not path.endswith(suffix) or path.endswith(".weights.h5"):
        raise DataError(f"cannot save a model as '{path}': --model-file must end in {suffix}"
                        + (" (and not .weights.h5, the name of the weights saved beside it)"
                           if suffix == ".h5" else ""))
    if not os.path.isdir(folder):
        raise DataError(f"cannot write '{path}': folder '{folder}' does not exist; "
                        "create it or choose another --model-file")
    if os.path.isdir(path):
        raise DataError(f"cannot write '{path}': it is a folder; choose another --model-file")
    try:  # a file made and removed tells on every system and drive, where os.access does not (Windows)
        os.unlink(_new_hidden_file(folder, os.path.basename(path)))
    except OSError as error:
        raise DataError(f"cannot write '{path}' ({why_not_written(error)}): choose another --model-file") from None


def check_log_folder(log_dir):
    if os.path.exists(log_dir) and not os.path.isdir(log_dir):
        raise DataError(f"--log-dir '{log_dir}' is a file, not a folder: choose another --log-dir")
    if os.path.isdir(log_dir) and not os.access(log_dir, os.W_OK):
        raise DataError(f"--log-dir '{log_dir}': no permission to write in it; choose another --log-dir")


def check_seed(seed):
    """NumPy and TensorFlow take seeds from 0 to 2**32 - 1; the model scripts add the epoch."""
    if not 0 <= seed < 2 ** 32 - 100_000:
        raise DataError(f"--seed {seed} must be a whole number from 0 to {2 ** 32 - 100_001}")


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
    if not os.path.exists(path):
        return "no such file"
    if isinstance(error, Image.UnidentifiedImageError):
        return "not an image that Pillow can read"
    if isinstance(error, Image.DecompressionBombError):
        return f"more pixels than Pillow's limit of {2 * Image.MAX_IMAGE_PIXELS} against decompression bombs"
    return str(error) or type(error).__name__


def read_rgb(path):
    """The image at path, upright and RGB, full size; a DataError names the file if unreadable."""
    try:
        with Image.open(path) as image:
            return to_rgb(ImageOps.exif_transpose(image))
    except Exception as error:  # Pillow raises many kinds on a damaged or foreign file
        raise DataError(f"cannot read image '{path}': {why_unreadable(path, error)}") from None


def read_image(path, image_size):
    """One image as the models see it: image_size x image_size x 3 uint8, stretched to a square
    as flow_from_directory did, resized with antialiasing; a large JPEG is decoded small (draft)."""
    with Image.open(path) as image:
        image.draft("RGB", (image_size, image_size))
        upright = to_rgb(ImageOps.exif_transpose(image))
    return np.asarray(upright.resize((image_size, image_size), Image.Resampling.LANCZOS), dtype=np.uint8)


def read_images(paths, image_size):
    """(uint8 array of the images at paths that can be read, readable mask), read in parallel;
    each file that cannot be read is warned about and left out."""
    images = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)

    def read_into(position):
        try:
            images[position] = read_image(paths[position], image_size)
        except Exception as error:  # any file that does not decode is skipped, whatever the reason
            return why_unreadable(paths[position], error)

    # Pillow decodes and resizes outside Python's global lock, so threads use every core
    # (os.process_cpu_count, new in Python 3.13, counts those this process may use).
    cores = (getattr(os, "process_cpu_count", None) or os.cpu_count)() or 1
    with concurrent.futures.ThreadPoolExecutor(max_workers=cores) as pool:
        problems = list(pool.map(read_into, range(len(paths))))  # a stop cancels the reads not started
    for path, problem in zip(paths, problems):
        if problem:
            warn(f"skipped '{path}': {problem}")
    readable = np.array([problem is None for problem in problems], dtype=bool)
    return (images if readable.all() else images[readable]), readable


def read_image_folder(data_dir, class_names, image_size, role):
    """(images, labels, paths) of every readable image of data_dir's class folders, in
    flow_from_directory's order; a class left without a readable image is a DataError."""
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


def check_validation_split(validation_dir, fraction, default_dir):
    """The validation folder to read: validation_dir or default_dir; None with --validation-split."""
    if fraction is None:
        return validation_dir or default_dir
    if validation_dir is not None:
        raise DataError("--validation-dir and --validation-split cannot be used together: give "
                        "--validation-split to hold out photos of --train-dir, or --validation-dir alone")
    if not 0 < fraction < 1:
        raise DataError(f"--validation-split {fraction} must be a fraction between 0 and 1, such as 0.2")
    return None


# The parts of each image hashed, as the fractions (left, top, right, bottom) cut off: the whole, its
# centre, and the whole less a strip on one side. A copy cropped by up to 5 % matches one of them.
HASHED_PARTS = ((0, 0, 0, 0), (.02, .02, .02, .02), (.05, .05, .05, .05),
                (.05, 0, 0, 0), (0, .05, 0, 0), (0, 0, .05, 0), (0, 0, 0, .05))


def perceptual_hashes(images):
    """(images, parts, 256) booleans: imagehash's pHash of each HASHED_PARTS of each uint8 image."""
    import imagehash  # only runs that compare photos need it
    side = images.shape[1]
    return np.array([[imagehash.phash(Image.fromarray(image[round(side * top):side - round(side * bottom),
                                                            round(side * left):side - round(side * right)]),
                                      hash_size=16).hash.ravel()
                      for left, top, right, bottom in HASHED_PARTS] for image in images])


def near_duplicates(hashes, other_hashes=None):
    """Index pairs (i, j) of near-duplicate images: within hashes (i < j), or of hashes and
    other_hashes. Two images are when at most NEAR_DUPLICATE_BITS bits differ between one's
    whole image and any hashed part of the other."""
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


def split_groups(count, pairs):
    """The group of each of count images: near-duplicates (index pairs) joined, transitively."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    first, second = np.array(pairs, dtype=np.int64).reshape(-1, 2).T
    graph = coo_matrix((np.ones(len(first)), (first, second)), shape=(count, count))
    return connected_components(graph, directed=False)[1]


def held_out(data_dir, paths, labels, groups, class_names, fraction, seed):
    """Which images go to validation: those whose group's first path within its class folder (so that
    a photo moved to another class keeps its side) hashes with the seed below fraction; every class
    needs images on both sides."""
    keys = [os.path.relpath(path, os.path.join(data_dir, class_names[label])).replace(os.sep, "/")
            for path, label in zip(paths, labels)]
    group_keys = {}
    for index in sorted(range(len(keys)), key=keys.__getitem__):
        group_keys.setdefault(groups[index], keys[index])
    scores = {group: int.from_bytes(hashlib.sha256(f"{seed}/{key}".encode("utf-8", "surrogateescape"))
                                    .digest()[:8], "big") / 2 ** 64 for group, key in group_keys.items()}
    validation = np.array([scores[group] < fraction for group in groups], dtype=bool)
    for index, class_name in enumerate(class_names):
        sides = validation[labels == index]
        if sides.all() or not sides.any():
            raise DataError(f"--validation-split {fraction} leaves no {'training' if sides.all() else 'validation'} "
                            f"image in '{os.path.join(data_dir, class_name)}' ({len(sides)} readable): add "
                            "images, or choose another fraction or --seed")
    return validation


def read_training_and_validation(train_dir, validation_dir, class_names, image_size, fraction, seed):
    """Every image read once: (images, labels) to train on and (images, labels, names within their
    folder) to validate on, from the two folders or, when fraction is given, from train_dir split
    with seed; near-duplicates across the two sides or across classes warned about. Returns them
    and the files for the run's folder, {name: text}."""
    images, labels, paths = read_image_folder(train_dir, class_names, image_size, "training")
    hashes = perceptual_hashes(images)
    index_pairs = near_duplicates(hashes)
    pairs = [(paths[i], labels[i], paths[j], labels[j]) for i, j in index_pairs]
    if fraction is None:
        validation_images, validation_labels, validation_paths = read_image_folder(
            validation_dir, class_names, image_size, "validation")
        across = [(validation_paths[i], validation_labels[i], paths[j], labels[j])
                  for i, j in near_duplicates(perceptual_hashes(validation_images), hashes)]
        if across:
            warn(f"validation images that are near-duplicates of training images: "
                 f"{len({pair[0] for pair in across})}, so val_accuracy flatters the model; move each to the "
                 "side of its pair, or remove it (the list is also in near_duplicates.tsv in the TensorBoard run):\n"
                 f"{first_lines(near_duplicate_table(across, class_names))}")
        pairs = across + [pair for pair in pairs if pair[1] != pair[3]]
        train = images, labels
        names = [os.path.relpath(path, validation_dir) for path in validation_paths]
        run_files = {}
    else:
        groups = split_groups(len(paths), index_pairs)
        side = held_out(train_dir, paths, labels, groups, class_names, fraction, seed)
        train, validation_images, validation_labels = (images[~side], labels[~side]), images[side], labels[side]
        names = [os.path.relpath(path, train_dir) for path, held in zip(paths, side) if held]
        run_files = {"validation_files.txt": "\n".join(readable_text(name) for name in names)}
        notice(f"Held out for validation: {counts_per_class(validation_labels, class_names)}; left to train on: "
               f"{counts_per_class(train[1], class_names)}; groups of near-duplicates, each kept on one side "
               f"(near_duplicates.tsv in the TensorBoard run): {np.sum(np.bincount(groups) > 1)}")
    mixed = [pair for pair in pairs if pair[1] != pair[3]]
    if mixed:
        warn(f"pairs of near-duplicate images in different classes: {len(mixed)}; one label of each pair is "
             f"wrong, or the classes are too alike to tell apart:\n{first_lines(near_duplicate_table(mixed, class_names))}")
    return train, (validation_images, validation_labels, names), {
        **run_files, "near_duplicates.tsv": "\n".join(near_duplicate_table(pairs, class_names))}


def counts_per_class(labels, class_names):
    """{class name: how many of labels are its}."""
    return dict(zip(class_names, np.bincount(labels, minlength=len(class_names)).tolist()))


def near_duplicate_table(pairs, class_names):
    """Lines of a table, a tab-separated one per pair (path, label, its near-duplicate's path, label)."""
    return (["path\tclass\tnear-duplicate\tits class"] + [
        f"{readable_text(path)}\t{class_names[label]}\t{readable_text(other)}\t{class_names[other_label]}"
        for path, label, other, other_label in pairs])


def first_lines(lines, limit=20):
    """A table's lines as text: its heading and first limit rows, and how many more there are."""
    return "\n".join(lines[:limit + 1] + ([f"and {len(lines) - limit - 1} more"] if len(lines) > limit + 1 else []))


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


# Writing files: never over an existing one, never half of one.

def _new_hidden_file(folder, name):
    """A new empty hidden file in folder for name's data. open(..., "xb") gives it the
    permissions the umask leaves (-rw-r--r-- as a rule), where tempfile's are the owner's alone."""
    stem, suffix = os.path.splitext(name)
    suffix = ".weights" + suffix if stem.endswith(".weights") else suffix  # Keras checks the suffix
    while True:
        path = os.path.join(folder, f".{name}.partial-{secrets.token_hex(4)}{suffix}")
        with contextlib.suppress(FileExistsError), open(path, "xb"):
            return path


def save_new_file(data, folder, names):
    """Write data (bytes) as a new file in folder, under the first of names that is free; its path.
    The name is claimed by an exclusive create, which no other program can win too, and the
    whole file, written under a hidden name, is renamed onto it: on any drive (FAT, exFAT,
    shares), no hard links needed. A stop waits the milliseconds this takes, so that a stopped
    script leaves no empty or half-written file, and no hidden one."""
    temp_path = None
    with stops_held_off() as stops:
        try:
            temp_path = _new_hidden_file(folder, "new")
            with open(temp_path, "wb") as temp_file:
                temp_file.write(data)
            for name in names:
                path = os.path.join(folder, name)
                try:
                    open(path, "xb").close()
                except FileExistsError:
                    continue
                os.replace(temp_path, path)
                break
        except OSError as error:
            raise DataError(f"cannot write in '{os.path.normpath(folder)}' ({why_not_written(error)}): "
                            "free some space, or choose another folder") from None
        finally:
            if temp_path and os.path.exists(temp_path):
                os.unlink(temp_path)
    if stops:  # acted on now that the file is whole
        signal.raise_signal(stops[0])
    return path


def save_new_jpeg(image, folder, prefix):
    """Save a Pillow image as the first free '<prefix>_<number>.jpg' in folder; its path."""
    jpeg = io.BytesIO()
    image.save(jpeg, format="JPEG", quality=95)
    numbered_names = (f"{prefix}_{number:04d}.jpg" for number in itertools.count(1))
    return save_new_file(jpeg.getvalue(), folder, numbered_names)


def save_files_atomically(saves):
    """Write each file of saves, {path: save(temporary path)}, whole under a hidden name, then
    rename all into place together, a stop waiting until they are. A file that cannot be
    written (a full disk) is a DataError naming it: nothing is replaced, nothing left beside."""
    temp_paths = {}
    with stops_held_off() as stops:
        try:
            for path, save in saves.items():
                try:
                    folder, name = os.path.split(os.path.abspath(path))
                    temp_paths[path] = _new_hidden_file(folder, name)
                    save(temp_paths[path])
                except (OSError, RuntimeError) as error:  # h5py raises RuntimeError on a full disk too
                    raise DataError(f"cannot write '{path}' ({why_not_written(error)}): nothing was "
                                    "replaced; free some space, or save elsewhere with --model-file") from None
            for path, temp_path in temp_paths.items():
                os.replace(temp_path, path)
        finally:
            for temp_path in temp_paths.values():
                if os.path.exists(temp_path):
                    os.unlink(temp_path)
    if stops:  # acted on now that the set is whole
        signal.raise_signal(stops[0])


def new_run_folder(log_dir, name, files=None):
    """Make a new TensorBoard run folder <log_dir>/<name>-<date>-<time>, or -2, -3, ... after it
    if that is taken: os.mkdir makes a folder or fails in one step, so runs started in the
    same second (a sweep in a shell loop) never share one. files ({name: text}) are written in it."""
    stamp = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        os.makedirs(log_dir, exist_ok=True)
        for folder in itertools.chain([stamp], (f"{stamp}-{number}" for number in itertools.count(2))):
            with contextlib.suppress(FileExistsError):
                os.mkdir(os.path.join(log_dir, folder))
                for file_name, text in (files or {}).items():
                    with open(os.path.join(log_dir, folder, file_name), "w", encoding="utf-8") as file:
                        file.write(text + "\n")
                return os.path.join(log_dir, folder)
    except OSError as error:
        raise DataError(f"cannot make a TensorBoard run folder in '{log_dir}' "
                        f"({error.strerror or error}): choose another --log-dir") from None


# What a model got wrong.

def mistakes(labels, predictions, confidences):
    """Indices of the misclassified images, the most confident mistake first (confidences:
    the probability given to each prediction)."""
    wrong = np.flatnonzero(np.asarray(predictions) != np.asarray(labels))
    return wrong[np.argsort(-np.asarray(confidences)[wrong], kind="stable")]


def mistakes_table(names, labels, predictions, confidences, class_names, limit=20):
    """The mistakes, most confident first, one tab-separated line each: the image's name (readable
    text), its true class, the predicted class and the probability given to it; at most limit."""
    return first_lines(["path\ttrue class\tpredicted class\tprobability"] + [
        f"{readable_text(names[index])}\t{class_names[labels[index]]}\t{class_names[predictions[index]]}\t"
        f"{confidences[index]:.4f}" for index in mistakes(labels, predictions, confidences)], limit)


def label_issues(paths, labels, probabilities, class_names):
    """The images whose given label looks wrong, the most suspect first, from out-of-fold
    probabilities (cleanlab's find_label_issues, made for this), as text: a line each, the
    path (readable text), the given class, the probability of it and the class the model believes."""
    from cleanlab.filter import find_label_issues  # slow to import, and only --check-labels needs it
    suspects = find_label_issues(np.asarray(labels), np.asarray(probabilities),
                                 return_indices_ranked_by="self_confidence", n_jobs=1)
    if not len(suspects):
        return "No training image's label looks wrong."
    return "\n".join([f"{len(suspects)} training images whose label looks wrong, the most suspect first "
                      "(path, given class, its probability, likely class):"] + [
        f"{readable_text(paths[index])}\t{class_names[labels[index]]}\t{probabilities[index][labels[index]]:.4f}\t"
        f"{class_names[int(np.argmax(probabilities[index]))]}" for index in suspects])


# Pictures for TensorBoard.

def _shortened(text, font, width):
    """text, cut with an ellipsis to fit in width pixels."""
    while font.getlength(text) > width and len(text) > 1:
        text = text[:-2] + "\u2026"
    return text


def picture_grid(pictures, captions, columns, tile):
    """Pictures side by side, columns to a row, each fitted in a tile x tile square above its
    caption (lines split by "\n"). TensorBoard shows an image about 350 pixels wide unless
    asked: columns x tile at most that keeps the letters legible."""
    font = ImageFont.load_default(size=14)
    caption_height = 17 * max(caption.count("\n") + 1 for caption in captions) + 6
    rows = math.ceil(len(pictures) / columns)
    grid = Image.new("RGB", (columns * tile, rows * (tile + caption_height)), "white")
    draw = ImageDraw.Draw(grid)
    for number, (picture, caption) in enumerate(zip(pictures, captions)):
        left, top = (number % columns) * tile, (number // columns) * (tile + caption_height)
        fitted = ImageOps.contain(picture.convert("RGB"), (tile - 4, tile - 4), Image.Resampling.BICUBIC)
        grid.paste(fitted, (left + (tile - fitted.width) // 2, top + (tile - fitted.height) // 2))
        for line_number, line in enumerate(readable_text(caption).split("\n")):
            draw.text((left + tile // 2, top + tile + 2 + 17 * line_number), _shortened(line, font, tile - 6),
                      fill="black", font=font, anchor="mt")
    return grid


def draw_message(text, width=340):
    """A picture saying text, for a TensorBoard image tag with nothing to show."""
    picture = Image.new("RGB", (width, 60), "white")
    font = ImageFont.load_default(size=14)
    text = _shortened(text, font, width - 20)
    ImageDraw.Draw(picture).text((10, 30), text, fill="black", font=font, anchor="lm")
    return picture


def draw_confusion_matrix(counts, class_names, title):
    """The confusion matrix as a picture: one row per true class, shaded by the row's share."""
    font = ImageFont.load_default(size=14)
    names = [_shortened(name, font, 150) for name in class_names]
    widest_name = max(font.getlength(name) for name in names)
    cell = max(64, int(widest_name) + 12)
    left = int(max(widest_name, font.getlength("true class"))) + 20  # room for the row names
    top = 80  # room for the title and the column names
    matrix_size = len(names) * cell
    picture = Image.new("RGB", (max(left + matrix_size, int(font.getlength(title))) + 20,
                                top + matrix_size + 12), "white")
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
