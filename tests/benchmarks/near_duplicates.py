"""What the near-duplicate check finds, misses and costs: a measurement.

    python tests/benchmarks/near_duplicates.py [--pictures FOLDER]

For sign_digits4 and flowers4 in ../shared/datasets (skipped with a message when absent):
1. planted: copies of 60 training photos changed in several ways, each looked for among the
   set's photos as a validation photo would be; found = its original is named, false = another
   photo is;
2. as they are: the pairs the check finds within train/ and between validation/ and train/
   (with --pictures, a grid of them to look at by eye), and each photo's nearest other photo;
each at several thresholds (bits of 256 that differ), NEAR_DUPLICATE_BITS the scripts' own.
Then the seconds it takes on the bundled set. docs/near-duplicates.md has the results.
"""

import argparse
import io
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import photos  # noqa: E402

DATA_SETS = {name: REPO.parent / "shared" / "datasets" / name for name in ("sign_digits4", "flowers4")}
IMAGE_SIZE = 150  # FirstModel's and SecondModel's
THRESHOLDS = (16, 24, 32, 40, 48)


def crop(image, left, top, right, bottom):
    """image less these fractions of its width and height on each side."""
    width, height = image.size
    return image.crop((round(width * left), round(height * top), round(width * (1 - right)),
                       round(height * (1 - bottom))))


def reencoded(image, quality):
    encoded = io.BytesIO()
    image.save(encoded, "JPEG", quality=quality)
    return Image.open(io.BytesIO(encoded.getvalue()))


CHANGES = {
    "resized to half": lambda image: image.resize((image.width // 2, image.height // 2), Image.Resampling.BILINEAR),
    "re-encoded, JPEG quality 30": lambda image: reencoded(image, 30),
    "brightened 30 %": lambda image: ImageEnhance.Brightness(image).enhance(1.3),
    "darkened 30 %": lambda image: ImageEnhance.Brightness(image).enhance(0.7),
    "cropped 2 % each side": lambda image: crop(image, .02, .02, .02, .02),
    "cropped 5 % each side": lambda image: crop(image, .05, .05, .05, .05),
    "cropped 5 % off one side": lambda image: crop(image, 0, 0, .05, 0),
    "cropped 10 % off one side": lambda image: crop(image, 0, .1, 0, 0),
    "burst: framing moved 3 %": lambda image: crop(image, .03, 0, 0, .03),
    "burst: turned 2 degrees": lambda image: crop(image.rotate(2, Image.Resampling.BICUBIC), .03, .03, .03, .03),
    "mirrored (not a near-duplicate)": lambda image: image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
}


def read_set(folder):
    """(images, paths) of a folder's class folders, as the scripts read them."""
    class_names = photos.class_folder_names(str(folder), "data")
    images, _, paths = photos.read_image_folder(str(folder), class_names, IMAGE_SIZE, "data")
    return images, paths


def as_network_input(image):
    """A changed photo as the scripts hold it: stretched to the square, resized with antialiasing."""
    return np.asarray(image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS))


def at_threshold(bits, function, *args):
    saved, photos.NEAR_DUPLICATE_BITS = photos.NEAR_DUPLICATE_BITS, bits
    try:
        return function(*args)
    finally:
        photos.NEAR_DUPLICATE_BITS = saved


def planted(name, train_hashes, train_paths):
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(train_paths), 60, replace=False)
    print(f"\n### {name}: planted copies of 60 training photos (found / named another photo)\n")
    print("| change | " + " | ".join(f"{bits} bits" for bits in THRESHOLDS) + " |")
    print("|---|" + "---|" * len(THRESHOLDS))
    for change, make in CHANGES.items():
        copies = np.stack([as_network_input(make(photos.read_rgb(train_paths[index]))) for index in chosen])
        copy_hashes = photos.perceptual_hashes(copies)
        cells = []
        for bits in THRESHOLDS:
            pairs = at_threshold(bits, photos.near_duplicates, copy_hashes, train_hashes)
            found = {copy for copy, original in pairs if original == chosen[copy]}
            others = {copy for copy, original in pairs if original != chosen[copy]}
            cells.append(f"{len(found)} / {len(others)}")
        print(f"| {change} | " + " | ".join(cells) + " |")


def as_they_are(name, folder, train_images, train_hashes, train_paths, pictures):
    validation_images, validation_paths = read_set(folder / "validation")
    validation_hashes = photos.perceptual_hashes(validation_images)
    print(f"\n### {name} as it is: pairs found within train/ and between validation/ and train/\n")
    print("| threshold | within train/ | validation/ to train/ |")
    print("|---|---|---|")
    for bits in THRESHOLDS:
        within = at_threshold(bits, photos.near_duplicates, train_hashes)
        across = at_threshold(bits, photos.near_duplicates, validation_hashes, train_hashes)
        print(f"| {bits} bits | {len(within)} | {len(across)} |")
    within = photos.near_duplicates(train_hashes)
    across = photos.near_duplicates(validation_hashes, train_hashes)
    for label, pairs, first_paths in (("within", within, train_paths), ("across", across, validation_paths)):
        for first, second in pairs:
            print(f"{label}\t{os.path.relpath(first_paths[first], folder)}\t"
                  f"{os.path.relpath(train_paths[second], folder)}")
    if pictures and (within or across):
        tiles, captions = [], []
        for pairs, first_images, first_paths in ((within, train_images, train_paths),
                                                 (across, validation_images, validation_paths)):
            for first, second in pairs[:24]:
                tiles += [Image.fromarray(first_images[first]), Image.fromarray(train_images[second])]
                captions += [os.path.relpath(first_paths[first], folder), os.path.relpath(train_paths[second], folder)]
        picture = Path(pictures) / f"near_duplicates_{name}.png"
        import reports  # TensorFlow with it: only for the pictures

        reports.picture_grid(tiles, captions, columns=4, tile=150).save(picture)
        print(f"(pairs drawn in {picture})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pictures", help="a folder to draw the pairs found in, to look at by eye")
    args = parser.parse_args()
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"the scripts' threshold: {photos.NEAR_DUPLICATE_BITS} bits of 256")
    for name, folder in DATA_SETS.items():
        if not folder.is_dir():
            print(f"{name}: not found in {folder}, skipped")
            continue
        train_images, train_paths = read_set(folder / "train")
        train_hashes = photos.perceptual_hashes(train_images)
        planted(name, train_hashes, train_paths)
        as_they_are(name, folder, train_images, train_hashes, train_paths, args.pictures)

    # The cost on the bundled set, as a two-folder run pays it, images already in memory.
    train_images, _ = read_set(REPO / "data" / "train")
    validation_images, _ = read_set(REPO / "data" / "validation")
    for attempt in range(3):
        started = time.perf_counter()
        train_hashes = photos.perceptual_hashes(train_images)
        photos.near_duplicates(train_hashes)
        photos.near_duplicates(photos.perceptual_hashes(validation_images), train_hashes)
        print(f"bundled set, {len(train_images) + len(validation_images)} images at {IMAGE_SIZE}x{IMAGE_SIZE}: "
              f"{time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
