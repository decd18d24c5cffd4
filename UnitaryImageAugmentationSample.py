"""Turn one image into randomly augmented copies, to see what augmentation does.

    python UnitaryImageAugmentationSample.py      # 21 copies of data/train/refImage.png
                                                  # in data/generated/MY_CLASS_0001.jpg ...
    tensorboard --logdir logs                     # the image and its copies side by side

Edit the constants below to try other augmentation settings. Existing files are
never overwritten: a second run adds new copies after the ones already there.
"""

import argparse
import os
import sys

import runs

runs.start("UnitaryImageAugmentationSample.py")  # first: a stop is one line from now on, and TensorFlow starts quietly
runs.on_stop("the copies written so far are complete")

from tensorflow.keras.preprocessing.image import ImageDataGenerator, array_to_img, img_to_array

import photos
import reports

IMAGE = "data/train/refImage.png"
OUTPUT_DIR = "data/generated"
COUNT = 21
PREFIX = "MY_CLASS"  # name the copies after the class of the image
LOG_DIR = "logs"  # TensorBoard shows the image beside its copies

# The 2018 augmentation settings.
ROTATION_RANGE = 40
WIDTH_SHIFT_RANGE = 0.2
HEIGHT_SHIFT_RANGE = 0.2
SHEAR_RANGE = 0.2
ZOOM_RANGE = 0.2
HORIZONTAL_FLIP = True
FILL_MODE = "nearest"


def parse_args():
    parser = argparse.ArgumentParser(description="Write randomly augmented copies of one image.")
    parser.add_argument("--image", default=IMAGE)
    parser.add_argument("--output-dir", default=OUTPUT_DIR)
    parser.add_argument("--count", type=int, default=COUNT, help="how many copies to write")
    parser.add_argument("--prefix", default=PREFIX, help="file names start with it")
    parser.add_argument("--log-dir", default=LOG_DIR, help="TensorBoard runs go in sub-folders")
    return parser.parse_args()


def main():
    args = parse_args()
    if args.count < 0:
        raise runs.DataError(f"--count {args.count} must be 0 or more")
    if os.path.isdir(args.image):
        raise runs.DataError(f"--image '{args.image}' is a folder: name one image file")
    if not os.path.isfile(args.image):
        raise runs.DataError(f"image '{args.image}' does not exist: name an image with --image")
    reports.check_log_folder(args.log_dir)
    original = photos.read_rgb(args.image)
    image = img_to_array(original)
    os.makedirs(args.output_dir, exist_ok=True)

    augmentation = ImageDataGenerator(
        rotation_range=ROTATION_RANGE,
        width_shift_range=WIDTH_SHIFT_RANGE,
        height_shift_range=HEIGHT_SHIFT_RANGE,
        shear_range=SHEAR_RANGE,
        zoom_range=ZOOM_RANGE,
        horizontal_flip=HORIZONTAL_FLIP,
        fill_mode=FILL_MODE,
    )
    pictures, captions = [original], ["original"]  # the grid for TensorBoard: up to 24 pictures
    for _ in range(args.count):
        copy = array_to_img(augmentation.random_transform(image))
        path = photos.save_new_jpeg(copy, args.output_dir, args.prefix)
        print(path)
        if len(pictures) < 24:
            pictures.append(copy)
            captions.append(os.path.basename(path))
    print(f"Wrote {args.count} augmented copies of {args.image} to {args.output_dir}")

    # Before and after, side by side in TensorBoard.
    run_dir = reports.new_run_folder(args.log_dir, "UnitaryImageAugmentationSample")
    grid = reports.picture_grid(pictures, captions, columns=3, tile=115)
    reports.log_picture(run_dir, "before_and_after_augmentation",
                        grid, step=0, description=f"{args.image}, then its augmented copies.")
    print(f"TensorBoard run: {run_dir}")


if __name__ == "__main__":
    try:
        main()
    except (runs.DataError, OSError) as error:
        sys.exit(runs.readable_text(f"UnitaryImageAugmentationSample.py: error: {error}"))
