"""How fast FirstModel's input pipeline feeds the network: not a test, a measurement.

    python tests/benchmark_input_pipeline.py            # about 25 minutes on 2 cores

It makes two copies of the bundled sample set (428 images): one upscaled to
4032x3024 JPEGs, like 12-megapixel phone photos, and one at 300x200. On each,
for batch sizes 1 and 16, it trains FirstModel's network with FirstModel's
augmentation and validation and prints:

  in-memory   the scripts' pipeline: images read once into memory, augmented there
  2018-style  flow_from_directory, decoding every photo at every epoch
  floor       the same network fitted on in-memory tensors with no augmentation

with the seconds of the one-off read, of the first epoch and the median later
epoch, the ratio of that median to the floor's, images per second and peak RSS.
Each configuration runs in its own process, so that peak RSS is its own.
"""

import argparse
import concurrent.futures
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

PHOTO_SIZES = {"12 MP": (4032, 3024), "300x200": (300, 200)}
BATCH_SIZES = (1, 16)
PIPELINES = ("in-memory", "2018-style", "floor")
EPOCHS = 3  # the first, then two later epochs for the median


def make_photos(target_dir, size):
    """The bundled sample set, every image resized to size and saved as a JPEG."""
    from PIL import Image

    sources = sorted(path for split in ("train", "validation")
                     for path in (REPO / "data" / split).glob("*/*") if path.is_file())

    def convert(source):
        target = target_dir / source.relative_to(REPO / "data")
        target = target.with_suffix(".jpg")
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(source) as image:
            image.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(target, quality=90)

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(convert, sources))
    return len(sources)


class EpochTimer:
    """Seconds per epoch, training and validation together."""

    def __init__(self):
        import keras

        class Callback(keras.callbacks.Callback):
            def on_epoch_begin(callback, epoch, logs=None):
                callback.started = time.perf_counter()

            def on_epoch_end(callback, epoch, logs=None):
                self.seconds.append(time.perf_counter() - callback.started)

        self.seconds = []
        self.callback = Callback()


def measure(pipeline, data_dir, batch_size, epochs):
    """Train for epochs in this process; returns the figures as a dict."""
    import keras
    import numpy as np
    from tensorflow.keras.preprocessing.image import ImageDataGenerator

    import FirstModel
    import photos
    import training

    keras.utils.set_random_seed(0)
    train_dir, validation_dir = data_dir / "train", data_dir / "validation"
    names, _, _ = photos.check_image_folders(train_dir, validation_dir)
    size = FirstModel.IMAGE_SIZE
    augmentation = ImageDataGenerator(**FirstModel.AUGMENTATION)
    read_seconds = 0.0
    if pipeline == "2018-style":
        augmentation.rescale = 1.0 / 255
        train = augmentation.flow_from_directory(
            train_dir, target_size=(size, size), batch_size=batch_size, classes=names)
        validation = ImageDataGenerator(rescale=1.0 / 255).flow_from_directory(
            validation_dir, target_size=(size, size), batch_size=batch_size, classes=names,
            shuffle=False)
        fit_arguments = dict(x=train, validation_data=validation)
        image_count = train.samples
    else:
        started = time.perf_counter()
        # The scripts' own read; its "Read N images" line goes before the figures' JSON line.
        train_images, train_labels, _ = photos.read_image_folder(train_dir, names, size, "training")
        validation_images, validation_labels, _ = photos.read_image_folder(
            validation_dir, names, size, "validation")
        read_seconds = time.perf_counter() - started
        image_count = len(train_images)
        if pipeline == "in-memory":
            fit_arguments = dict(
                x=training.training_batches(train_images, train_labels, len(names),
                                               batch_size, 0, FirstModel.AUGMENTATION),
                validation_data=training.validation_batches(
                    validation_images, validation_labels, len(names), batch_size))
        else:
            def tensors(images, labels):
                return images.astype(np.float32) / 255, np.eye(len(names))[labels]
            train_x, train_y = tensors(train_images, train_labels)
            fit_arguments = dict(x=train_x, y=train_y,
                                 validation_data=tensors(validation_images, validation_labels),
                                 batch_size=batch_size)

    model = FirstModel.build_model(size, len(names))
    model.compile(optimizer=keras.optimizers.Adadelta(learning_rate=FirstModel.LEARNING_RATE),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    timer = EpochTimer()
    model.fit(**fit_arguments, epochs=epochs, callbacks=[timer.callback], verbose=0)
    later = statistics.median(timer.seconds[1:])
    return {"read": read_seconds, "first": timer.seconds[0], "later": later,
            "images_per_second": image_count / later,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_in_new_process(pipeline, data_dir, batch_size, epochs):
    command = [sys.executable, __file__, "--measure", pipeline, "--data-dir", str(data_dir),
               "--batch-size", str(batch_size), "--epochs", str(epochs)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        sys.exit(f"{pipeline} on {data_dir} failed:\n{result.stderr}")
    return json.loads(result.stdout.splitlines()[-1])


def machine():
    cpu = "unknown CPU"
    if os.path.exists("/proc/cpuinfo"):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import tensorflow as tf
    return (f"{cpu}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", help="keep the generated photos here (default: a temporary folder)")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--measure", choices=PIPELINES, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.data_dir, args.batch_size, args.epochs)))
        return

    with tempfile.TemporaryDirectory() as temporary:
        work_dir = Path(args.work_dir or temporary)
        print(f"Machine: {machine()}")
        print(f"{args.epochs} epochs each; seconds per epoch include validation.")
        header = (f"{'photos':8} {'batch':>5} {'pipeline':11} {'read s':>7} {'1st epoch s':>11} "
                  f"{'later s':>8} {'x floor':>7} {'images/s':>8} {'peak RSS MB':>11}")
        for label, size in PHOTO_SIZES.items():
            data_dir = work_dir / f"{size[0]}x{size[1]}"
            if not (data_dir / "validation").is_dir():
                started = time.perf_counter()
                count = make_photos(data_dir, size)
                print(f"Made {count} {label} photos in {time.perf_counter() - started:.0f} s")
            print(header)
            for batch_size in BATCH_SIZES:
                figures = {pipeline: run_in_new_process(pipeline, data_dir, batch_size, args.epochs)
                           for pipeline in PIPELINES}
                for pipeline, figure in figures.items():
                    ratio = figure["later"] / figures["floor"]["later"]
                    print(f"{label:8} {batch_size:5} {pipeline:11} {figure['read']:7.1f} "
                          f"{figure['first']:11.1f} {figure['later']:8.2f} {ratio:7.2f} "
                          f"{figure['images_per_second']:8.0f} {figure['peak_rss_mb']:11.0f}",
                          flush=True)


if __name__ == "__main__":
    main()
