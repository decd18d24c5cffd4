"""SVMModel: the support vector machine the 2018 project set out to compare the CNNs with.

No network: each image becomes a fixed set of numbers (colour histograms and a
histogram of oriented gradients, HOG), and an SVM with an RBF kernel learns the
classes from those. C and gamma are chosen by cross-validation on the training
images only; the validation images are used once, to measure the chosen model.

    python SVMModel.py                         # trains on data/train, checks on data/validation
    python SVMModel.py --predict photos/       # classifies photos with the saved SVMModel.joblib
    tensorboard --logdir logs                  # the SVM beside the CNN runs

Edit the constants below and run again; every run gets its own TensorBoard folder.
"""

import argparse
import os
import sys
import time

import keras_tools  # first: TensorFlow starts there, without its start-up chatter

import joblib
import numpy as np
import tensorflow as tf
from PIL import Image
from sklearn.calibration import CalibratedClassifierCV
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

import image_files

# Data and outputs.
TRAIN_DIR = "data/train"
VALIDATION_DIR = "data/validation"
LOG_DIR = "logs"
MODEL_FILE = "SVMModel.joblib"

# Features: computed on IMAGE_SIZE x IMAGE_SIZE images.
IMAGE_SIZE = 64
HISTOGRAM_BINS = 16  # per hue, saturation and value channel
HOG_CELL = 8  # pixels per side of a HOG cell
HOG_ORIENTATIONS = 9  # gradient directions from 0 to 180 degrees

# The SVM, and the grid cross-validation chooses C and gamma from.
C_GRID = [0.1, 1, 10, 100]
GAMMA_GRID = ["scale", 1e-4, 1e-3]
CLASS_WEIGHT = "balanced"  # small classes weigh more, as SecondModel's class weights; or None
CV_FOLDS = 5
SEED = 2018


def parse_args():
    parser = argparse.ArgumentParser(description="Train SVMModel, an SVM on colour and HOG features.")
    parser.add_argument("--train-dir", default=TRAIN_DIR, help="one sub-folder of images per class")
    parser.add_argument("--validation-dir", default=VALIDATION_DIR, help="same classes as --train-dir")
    parser.add_argument("--log-dir", default=LOG_DIR, help="TensorBoard runs go in sub-folders")
    parser.add_argument("--model-file", default=MODEL_FILE,
                        help="where the SVM is saved; --predict loads it: a .joblib file is a "
                             "pickle that runs the code it holds, so load only models you made "
                             "or trust")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--predict", metavar="PATH",
                        help="classify this image, or every image under this folder, with the "
                             "model in --model-file, instead of training")
    return parser.parse_args()


def colour_histograms(image):
    """What colours the image holds, wherever they are: hue, saturation and value histograms."""
    hsv = np.asarray(Image.fromarray(image).convert("HSV"))
    return np.concatenate([np.histogram(hsv[..., channel], bins=HISTOGRAM_BINS, range=(0, 256))[0]
                           for channel in range(3)]) / (image.shape[0] * image.shape[1])


def hog(image):
    """Which way the edges run, cell by cell: a histogram of oriented gradients (Dalal and Triggs).

    Each cell's gradient directions are counted weighted by their strength, and
    each 2x2 block of cells is normalised, so that lighting matters little.
    """
    gray = np.asarray(Image.fromarray(image).convert("L"), dtype=np.float32)
    gradient_y, gradient_x = np.gradient(gray)
    strength = np.hypot(gradient_x, gradient_y)
    direction = np.rad2deg(np.arctan2(gradient_y, gradient_x)) % 180
    bins = np.minimum((direction * HOG_ORIENTATIONS / 180).astype(int), HOG_ORIENTATIONS - 1)
    cells = image.shape[0] // HOG_CELL
    size = cells * HOG_CELL
    weighted = np.zeros((size, size, HOG_ORIENTATIONS), dtype=np.float32)
    np.put_along_axis(weighted, bins[:size, :size, None], strength[:size, :size, None], axis=2)
    cell_histograms = weighted.reshape(cells, HOG_CELL, cells, HOG_CELL, HOG_ORIENTATIONS).sum(axis=(1, 3))
    blocks = np.concatenate([cell_histograms[:-1, :-1], cell_histograms[1:, :-1],
                             cell_histograms[:-1, 1:], cell_histograms[1:, 1:]], axis=-1)
    blocks /= np.sqrt(np.sum(blocks ** 2, axis=-1, keepdims=True) + 1e-6)
    return blocks.ravel()


def features(images):
    """One row of numbers per image: its colour histograms, then its HOG."""
    return np.stack([np.concatenate([colour_histograms(image), hog(image)]) for image in images])


def predict(model_file, path):
    """Classify the image or folder at path with the SVM saved in model_file."""
    paths = image_files.list_images_to_predict(path)
    if not os.path.isfile(model_file):
        raise image_files.DataError(f"no model '{model_file}': train one first with "
                                    "python SVMModel.py, or name one with --model-file")
    try:
        saved = joblib.load(model_file)
        model, probabilities = saved["pipeline"], saved["probabilities"]
        class_names, image_size = saved["class_names"], saved["image_size"]
    except Exception as error:  # joblib raises many kinds on a file it did not write
        raise image_files.DataError(f"'{model_file}' is not an SVMModel saved by SVMModel.py "
                                    f"({type(error).__name__}): name another with --model-file") from None
    images, paths = image_files.read_images_to_predict(paths, image_size)
    image_features = features(images)
    predictions = model.predict(image_features)
    class_probabilities = probabilities.predict_proba(image_features)
    for path, predicted, row in zip(paths, predictions, class_probabilities):
        print(f"{path}\t{class_names[predicted]}\t{row[predicted]:.4f}")


def main():
    args = parse_args()
    if args.predict:
        predict(args.model_file, args.predict)
        return

    # Check the folders before anything slow starts.
    class_names, train_counts, validation_counts = image_files.check_image_folders(
        args.train_dir, args.validation_dir)
    image_files.check_output_file(args.model_file, ".joblib")
    image_files.check_log_folder(args.log_dir)
    image_files.check_seed(args.seed)
    print(f"Classes: {', '.join(class_names)}")
    print(f"Training images per class: {train_counts}")
    print(f"Validation images per class: {validation_counts}")

    # The same images as the CNNs get, read the same way, at the size the features need.
    started = time.perf_counter()
    train_images, train_labels, _ = image_files.read_image_folder(
        args.train_dir, class_names, IMAGE_SIZE, "training")
    validation_images, validation_labels, _ = image_files.read_image_folder(
        args.validation_dir, class_names, IMAGE_SIZE, "validation")
    print(f"Read {len(train_images) + len(validation_images)} images in "
          f"{time.perf_counter() - started:.1f} s")
    train_features, validation_features = features(train_images), features(validation_images)
    print(f"{train_features.shape[1]} features per image")

    # Choose C and gamma by cross-validation on the training images only.
    class_counts = np.bincount(train_labels, minlength=len(class_names))
    if class_counts.min() < 2:
        smallest = class_names[int(class_counts.argmin())]
        raise image_files.DataError(
            f"training class folder '{os.path.join(args.train_dir, smallest)}' has "
            f"{class_counts.min()} readable image: cross-validation needs at least 2 per class")
    folds = StratifiedKFold(n_splits=min(CV_FOLDS, class_counts.min()), shuffle=True,
                            random_state=args.seed)
    pipeline = make_pipeline(StandardScaler(), SVC(kernel="rbf", class_weight=CLASS_WEIGHT))
    search = GridSearchCV(pipeline, {"svc__C": C_GRID, "svc__gamma": GAMMA_GRID}, cv=folds)
    search.fit(train_features, train_labels)
    best_c, best_gamma = search.best_params_["svc__C"], search.best_params_["svc__gamma"]
    print(f"Best of {len(C_GRID) * len(GAMMA_GRID)} settings by {folds.n_splits}-fold "
          f"cross-validation: C {best_c}, gamma {best_gamma} "
          f"(cross-validation accuracy {search.best_score_:.4f})")
    model = search.best_estimator_  # refitted on all the training images
    # Probabilities for --predict: the chosen SVM's scores calibrated on the same folds
    # (Platt scaling). They do not choose the class, the SVM does: on a few dozen images
    # the calibration is too rough for that.
    probabilities = CalibratedClassifierCV(model, ensemble=False, cv=folds)
    probabilities.fit(train_features, train_labels)

    # Measure the chosen model once on the validation images.
    train_accuracy = np.mean(model.predict(train_features) == train_labels)
    predictions = model.predict(validation_features)
    validation_accuracy = np.mean(predictions == validation_labels)
    counts = confusion_matrix(validation_labels, predictions, labels=range(len(class_names)))
    report = keras_tools.report_table(validation_labels, predictions, class_names)
    elapsed = time.perf_counter() - started
    print(f"Validation set, per class:\n{report}")
    print("Confusion matrix (rows: true class, columns: predicted class, in the order above):")
    print(counts)

    # TensorBoard: the accuracies under the CNN runs' tag names, so that they sit side by side.
    run_dir = image_files.new_run_folder(args.log_dir, "SVMModel")
    print(f"TensorBoard run: {run_dir}")
    run_log = tf.summary.create_file_writer(run_dir)
    keras_tools.log_hparams(run_log, run_dir, {
        "script": "SVMModel",
        "train_dir": args.train_dir,
        "validation_dir": args.validation_dir,
        "image_size": IMAGE_SIZE,
        "svm_c": float(best_c),
        "svm_gamma": str(best_gamma),
        "class_weights": CLASS_WEIGHT == "balanced",
        "seed": args.seed,
    }, class_names, train_labels)
    for folder, accuracy in (("train", train_accuracy), ("validation", validation_accuracy)):
        with tf.summary.create_file_writer(os.path.join(run_dir, folder)).as_default():
            tf.summary.scalar("epoch_accuracy", accuracy, step=0)
    keras_tools.log_confusion_matrix(run_log, validation_labels, predictions, class_names,
                                     "Validation set, SVM", step=0)
    keras_tools.log_text(run_log, "classification_report", report, step=0)

    # Save the fitted pipeline with what --predict needs to use it.
    image_files.save_files_atomically({args.model_file: lambda path: joblib.dump(
        {"pipeline": model, "probabilities": probabilities, "class_names": class_names,
         "image_size": IMAGE_SIZE}, path)})
    print(f"Saved {args.model_file}")
    # The last line sums the run up, like the CNN scripts' last line.
    print(f"accuracy: {train_accuracy:.4f} - val_accuracy: {validation_accuracy:.4f} - "
          f"time: {elapsed:.1f} s")


if __name__ == "__main__":
    try:
        main()
    except (image_files.DataError, OSError) as error:
        sys.exit(f"SVMModel.py: error: {error}")
    except KeyboardInterrupt:
        sys.exit("SVMModel.py: interrupted; nothing saved")
