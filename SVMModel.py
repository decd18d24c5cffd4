"""SVMModel: the support vector machine the 2018 project set out to compare the CNNs with.

No network: each image becomes a fixed set of numbers (colour histograms of the
whole image and of its quarters, a histogram of oriented gradients, HOG, and a small
thumbnail), and an SVM with an RBF kernel learns the classes from those. C and gamma
are chosen by cross-validation on the training images only; the validation images are
used once, to measure the chosen model.

    python SVMModel.py                         # trains on data/train, checks on data/validation
    python SVMModel.py --predict photos/       # classifies photos with the saved SVMModel.joblib
    python SVMModel.py --check-labels          # training photos whose label looks wrong
    tensorboard --logdir logs                  # the SVM beside the CNN runs

Edit the constants below and run again; every run gets its own TensorBoard folder.
"""

import argparse
import os
import sys
import time

import runs

runs.start("SVMModel.py")  # first: a stop is one line from now on, and TensorFlow starts quietly

import joblib
import numpy as np
import tensorflow as tf
from PIL import Image
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

import photos
import reports

# Data and outputs.
TRAIN_DIR = "data/train"
VALIDATION_DIR = "data/validation"
LOG_DIR = "logs"
MODEL_FILE = "SVMModel.joblib"

# Features, computed on FEATURES["image_size"] x FEATURES["image_size"] images, three
# kinds that weigh the same in the SVM's distance (measured in docs/generalisation.md):
FEATURES = dict(
    image_size=64,
    colour_bins=(8, 4, 4),  # hue, saturation, value: a joint histogram of 128 colours ...
    colour_grid=2,  # ... of the whole image and of each cell of a 2x2 grid: where the colours are
    hog_cell=16,  # pixels per side of a HOG cell: 4x4 cells, the outline more than the texture
    hog_orientations=9,  # gradient directions from 0 to 180 degrees
    thumbnail=8,  # an 8x8 RGB thumbnail: the layout of the picture
)

# The SVM, and the grid cross-validation chooses C and gamma from.
C_GRID = [0.1, 1, 10, 100]
GAMMA_GRID = ["scale", 0.1, 0.3, 1, 3]
CLASS_WEIGHT = "balanced"  # small classes weigh more, as SecondModel's class weights; or None
CV_FOLDS = 5
SEED = 2018


def parse_args():
    parser = argparse.ArgumentParser(
        description="Train SVMModel, an SVM on colour, HOG and thumbnail features.")
    parser.add_argument("--train-dir", default=TRAIN_DIR, help="one sub-folder of images per class")
    parser.add_argument("--validation-dir", help=f"same classes as --train-dir (default: {VALIDATION_DIR})")
    parser.add_argument("--validation-split", type=float, metavar="FRACTION",
                        help="instead of --validation-dir, hold out this fraction of each class of "
                             "--train-dir, the same photos for the same --seed, near-duplicates together")
    parser.add_argument("--log-dir", default=LOG_DIR, help="TensorBoard runs go in sub-folders")
    parser.add_argument("--model-file", default=MODEL_FILE,
                        help="where the SVM is saved; --predict loads it: a .joblib file is a "
                             "pickle that runs the code it holds, so load only models you made "
                             "or trust")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--predict", metavar="PATH",
                        help="classify this image, or every image under this folder, with the "
                             "model in --model-file, instead of training")
    parser.add_argument("--check-labels", action="store_true",
                        help="instead of training, list the training images whose label looks "
                             "wrong, the most suspect first: each image is classified by SVMs that "
                             "did not see it (cross-validation, seconds); nothing is moved or changed")
    args = parser.parse_args()
    args.validation_dir = photos.check_validation_split(args.validation_dir, args.validation_split, args.seed,
                                                        VALIDATION_DIR)
    return args


def colour_histograms(image, bins, grid):
    """Which colours the image holds, and where: joint hue-saturation-value histograms of the
    whole image and of each grid cell, square-rooted (Hellinger), so that no colour swamps the rest."""
    hsv = np.asarray(Image.fromarray(image).convert("HSV"))
    side = hsv.shape[0] // grid
    cells = [hsv] + [hsv[row:row + side, column:column + side]
                     for row in range(0, side * grid, side) for column in range(0, side * grid, side)]
    return np.sqrt(np.concatenate([
        np.histogramdd(cell.reshape(-1, 3), bins=bins, range=[(0, 256)] * 3)[0].ravel() / cell[..., 0].size
        for cell in cells]))


def hog(image, cell, orientations):
    """Which way the edges run, cell by cell: a histogram of oriented gradients (Dalal and Triggs).

    Each cell's gradient directions are counted weighted by their strength, and each 2x2
    block of cells is normalised, so that lighting matters little; square-rooted as above.
    """
    gray = np.asarray(Image.fromarray(image).convert("L"), dtype=np.float32)
    gradient_y, gradient_x = np.gradient(gray)
    strength = np.hypot(gradient_x, gradient_y)
    direction = np.rad2deg(np.arctan2(gradient_y, gradient_x)) % 180
    bins = np.minimum((direction * orientations / 180).astype(int), orientations - 1)
    cells = image.shape[0] // cell
    size = cells * cell
    weighted = np.zeros((size, size, orientations), dtype=np.float32)
    np.put_along_axis(weighted, bins[:size, :size, None], strength[:size, :size, None], axis=2)
    cell_histograms = weighted.reshape(cells, cell, cells, cell, orientations).sum(axis=(1, 3))
    blocks = np.concatenate([cell_histograms[:-1, :-1], cell_histograms[1:, :-1],
                             cell_histograms[:-1, 1:], cell_histograms[1:, 1:]], axis=-1)
    blocks /= np.sqrt(np.sum(blocks ** 2, axis=-1, keepdims=True) + 1e-6)
    return np.sqrt(blocks.ravel())


def features(images, settings):
    """{kind: one row of numbers per image} of the colour histograms, HOG and thumbnail."""
    size = settings["thumbnail"]
    return {
        "colour": np.stack([colour_histograms(image, settings["colour_bins"], settings["colour_grid"])
                            for image in images]),
        "hog": np.stack([hog(image, settings["hog_cell"], settings["hog_orientations"]) for image in images]),
        "thumbnail": np.stack([np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BOX),
                                          dtype=np.float32).ravel() / 255 for image in images]),
    }


def feature_columns(kinds):
    """Standardise each kind of feature, and weigh it by 1/sqrt(its number of columns), so that
    each kind counts as much in the SVM's distance, however many numbers it has."""
    columns, start, weights = [], 0, {}
    for kind, values in kinds.items():
        columns.append((kind, StandardScaler(), list(range(start, start + values.shape[1]))))
        weights[kind] = 1 / np.sqrt(values.shape[1])
        start += values.shape[1]
    return ColumnTransformer(columns, transformer_weights=weights)


def predict(model_file, path):
    """Classify the image or folder at path with the SVM saved in model_file."""
    paths = photos.list_images_to_predict(path)
    if not os.path.isfile(model_file):
        raise runs.DataError(f"no model '{model_file}': train one first with "
                             "python SVMModel.py, or name one with --model-file")
    try:
        saved = joblib.load(model_file)
        model, probabilities = saved["pipeline"], saved["probabilities"]
        class_names, settings = saved["class_names"], saved["features"]
    except Exception as error:  # joblib raises many kinds on a file it did not write
        raise runs.DataError(f"'{model_file}' is not an SVMModel saved by SVMModel.py "
                             f"({type(error).__name__}): name another with --model-file") from None
    images, readable = photos.read_images(paths, settings["image_size"])
    if not readable.any():
        raise runs.DataError("none of the images to predict can be read: see the warnings above")
    paths = [path for path, ok in zip(paths, readable) if ok]
    image_features = np.hstack(list(features(images, settings).values()))
    predictions = model.predict(image_features)
    class_probabilities = probabilities.predict_proba(image_features)
    for path, predicted, row in zip(paths, predictions, class_probabilities):
        print(f"{runs.readable_text(path)}\t{class_names[predicted]}\t{row[predicted]:.4f}")


def cross_validation_folds(labels, groups, class_names, train_dir, seed, fraction=None):
    """CV_FOLDS stratified folds, fewer if a class has fewer images, each group of near-duplicates in one fold (a copy
    in another would flatter the settings chosen); at least 2 per class (with fraction, of those --validation-split
    leaves to train on). A list of (training, held-out) indices."""
    class_counts = np.bincount(labels, minlength=len(class_names))
    if class_counts.min() < 2:
        folder = os.path.join(train_dir, class_names[int(class_counts.argmin())])
        held = (f"holds {len(photos.list_images(folder))} images, of which --validation-split {fraction} leaves "
                f"{class_counts.min()} to train on" if fraction else f"has {class_counts.min()} readable image")
        raise runs.DataError(f"training class folder '{folder}' {held}: cross-validation needs at least 2 per class; "
                             "add images" + (", or hold out a smaller fraction" if fraction else ""))
    class_groups = [len(set(groups[labels == index])) for index in range(len(class_names))]
    if min(class_groups) < 2:
        folder = os.path.join(train_dir, class_names[int(np.argmin(class_groups))])
        raise runs.DataError(f"the training photos of '{folder}' are all near-duplicates of each other: "
                             "cross-validation needs at least 2 that differ per class; add photos that differ")
    folds = StratifiedGroupKFold(n_splits=min(CV_FOLDS, *class_groups), shuffle=True, random_state=seed)
    return list(folds.split(labels, labels, groups))


def fit_svm(kinds, labels, folds):
    """The SVM with the C and gamma of best cross-validation accuracy on these images, refitted on all."""
    pipeline = make_pipeline(feature_columns(kinds), SVC(kernel="rbf", class_weight=CLASS_WEIGHT))
    search = GridSearchCV(pipeline, {"svc__C": C_GRID, "svc__gamma": GAMMA_GRID}, cv=folds)
    search.fit(np.hstack(list(kinds.values())), labels)
    print(f"Best of {len(C_GRID) * len(GAMMA_GRID)} settings by {len(folds)}-fold cross-validation: "
          f"C {search.best_params_['svc__C']}, gamma {search.best_params_['svc__gamma']} "
          f"(cross-validation accuracy {search.best_score_:.4f})")
    return search


def check_labels(args):
    """--check-labels: the training images whose label looks wrong, a line each, the most suspect first."""
    class_names, _ = photos.check_image_folder(args.train_dir, "training")
    images, labels, paths = photos.read_image_folder(args.train_dir, class_names, FEATURES["image_size"],
                                                     "training")
    kinds = features(images, FEATURES)
    groups = photos.near_duplicate_groups(photos.perceptual_hashes(images))
    folds = cross_validation_folds(labels, groups, class_names, args.train_dir, args.seed)
    if np.bincount(labels).min() < 3:
        raise runs.DataError(f"'{args.train_dir}' has a class of 2 readable images: "
                             "--check-labels needs at least 3 per class")
    search = fit_svm(kinds, labels, folds)
    # Each image's class probabilities from the chosen SVM trained on the other folds, its scores
    # calibrated (Platt scaling) within those folds.
    calibrated = CalibratedClassifierCV(clone(search.best_estimator_), ensemble=False, cv=2)
    probabilities = cross_val_predict(calibrated, np.hstack(list(kinds.values())), labels, cv=folds,
                                      method="predict_proba")
    return reports.label_issues(paths, labels, probabilities, class_names)


def main():
    args = parse_args()
    if args.predict:
        predict(args.model_file, args.predict)
        return
    if args.check_labels:
        print(check_labels(args))
        return

    # Check the folders before anything slow starts.
    class_names, train_counts, validation_counts = photos.check_image_folders(
        args.train_dir, args.validation_dir, args.validation_split)
    runs.check_output_file(args.model_file, ".joblib")
    reports.check_log_folder(args.log_dir)
    print(f"Classes: {', '.join(class_names)}\nTraining images per class: {train_counts}\nValidation images per "
          f"class: {validation_counts or f'{args.validation_split:.0%} of each class above, by name and --seed'}")

    # The same images as the CNNs get, read and split the same way, at the size the features need.
    started = time.perf_counter()
    (train_images, train_labels, train_groups), (validation_images, validation_labels, validation_names), \
        run_files = photos.read_training_and_validation(args.train_dir, args.validation_dir, class_names,
                                                        FEATURES["image_size"], args.validation_split, args.seed)
    print(f"Read {len(train_images) + len(validation_images)} images in "
          f"{time.perf_counter() - started:.1f} s")
    train_kinds = features(train_images, FEATURES)
    train_features = np.hstack(list(train_kinds.values()))
    validation_features = np.hstack(list(features(validation_images, FEATURES).values()))
    print(f"{train_features.shape[1]} features per image: " + ", ".join(
        f"{values.shape[1]} {kind}" for kind, values in train_kinds.items()))

    # Choose C and gamma by cross-validation on the training images only.
    folds = cross_validation_folds(train_labels, train_groups, class_names, args.train_dir, args.seed,
                                   args.validation_split)
    search = fit_svm(train_kinds, train_labels, folds)
    model = search.best_estimator_  # refitted on all the training images
    # Probabilities for --predict: the chosen SVM's scores calibrated on the same folds
    # (Platt scaling). They do not choose the class, the SVM does: on a few dozen images
    # the calibration is too rough for that.
    probabilities = CalibratedClassifierCV(model, ensemble=False, cv=folds)
    probabilities.fit(train_features, train_labels)

    # Measure the chosen model once on the validation images.
    train_accuracy = np.mean(model.predict(train_features) == train_labels)
    predictions = model.predict(validation_features)
    validation_probabilities = probabilities.predict_proba(validation_features)
    validation_accuracy = np.mean(predictions == validation_labels)
    report = reports.report_table(validation_labels, predictions, class_names)
    elapsed = time.perf_counter() - started
    print(f"Validation set, per class:\n{report}")
    print("Confusion matrix (rows: true class, columns: predicted class, in the order above):")
    print(confusion_matrix(validation_labels, predictions, labels=range(len(class_names))))

    # TensorBoard: the accuracies under the CNN runs' tag names, so that they sit side by side.
    run_dir = reports.new_run_folder(args.log_dir, "SVMModel", run_files)
    print(f"TensorBoard run: {run_dir}")
    reports.log_hparams(run_dir, {
        "script": "SVMModel", "train_dir": args.train_dir, "validation_dir": args.validation_dir or "",
        "validation_split": args.validation_split or 0.0,
        **FEATURES, "svm_c": float(search.best_params_["svc__C"]),
        "svm_gamma": str(search.best_params_["svc__gamma"]), "class_weights": CLASS_WEIGHT == "balanced",
        "seed": args.seed}, class_names, train_labels)
    for folder, accuracy in (("train", train_accuracy), ("validation", validation_accuracy)):
        with reports.written(os.path.join(run_dir, folder)):
            tf.summary.scalar("epoch_accuracy", accuracy, step=0)
    _, confidences = reports.log_validation(run_dir, validation_images, validation_labels,
                                            validation_probabilities, validation_names, class_names,
                                            "validation set, SVM", 0, predictions)
    mistakes = reports.mistakes_table(validation_names, validation_labels, predictions, confidences,
                                      class_names)
    reports.log_text(run_dir, "classification_report", report, step=0)
    reports.log_text(run_dir, "misclassified_validation_list", f"```\n{mistakes}\n```", step=0)
    print(f"Misclassified validation images, most confident first:\n{mistakes}")

    # Save the fitted pipeline with what --predict needs to use it, whole.
    with runs.lock(args.model_file):
        runs.write_whole({args.model_file: lambda path: joblib.dump(
            {"pipeline": model, "probabilities": probabilities, "class_names": class_names, "features": FEATURES,
             "validation_split": f"--validation-split {args.validation_split} --seed {args.seed}"
             if args.validation_split else ""}, path)})
    runs.on_stop(f"the model is saved in {args.model_file}")
    print(f"Saved {args.model_file}")
    # The last line sums the run up, like the CNN scripts' last line.
    print(f"accuracy: {train_accuracy:.4f} - val_accuracy: {validation_accuracy:.4f} - time: {elapsed:.1f} s")


if __name__ == "__main__":
    try:
        main()
    except (runs.DataError, OSError) as error:
        sys.exit(runs.readable_text(f"SVMModel.py: error: {error}"))
