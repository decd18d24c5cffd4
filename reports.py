"""What a run shows: its TensorBoard folder (Keras' scalars in <run>/train and <run>/validation, the rest in <run>), the
per-class report, the mistakes, and the training photos whose label looks wrong."""

import contextlib
import itertools
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFont, ImageOps
from sklearn.metrics import classification_report, confusion_matrix
from tensorboard.plugins.hparams import api as hparams_api
from tensorflow.keras.preprocessing.image import ImageDataGenerator

import training
from photos import first_lines
from runs import DataError, readable_text


# A run's TensorBoard folder.

def check_log_folder(log_dir):
    if os.path.exists(log_dir) and not os.path.isdir(log_dir):
        raise DataError(f"--log-dir '{log_dir}' is a file, not a folder: choose another --log-dir")
    if os.path.isdir(log_dir) and not os.access(log_dir, os.W_OK):
        raise DataError(f"--log-dir '{log_dir}': no permission to write in it; choose another --log-dir")


def new_run_folder(log_dir, name, files=None):
    """A new folder <log_dir>/<name>-<date>-<time> (-2, -3... if taken: os.mkdir fails) holding files."""
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
        raise DataError(f"cannot make a TensorBoard run folder in '{log_dir}' ({error.strerror or error}): "
                        "choose another --log-dir") from None


def start_run(log_dir, script, settings, class_names, train_images, train_labels, augmentation, seed, run_files):
    """A new run folder with run_files, the settings (HParams) and training images as the network gets them."""
    run_dir = new_run_folder(log_dir, script, run_files)
    log_hparams(run_dir, settings, class_names, train_labels, augmentation)
    # The first training images of each class in turn, resized and augmented.
    by_class = [np.flatnonzero(train_labels == index) for index in range(len(class_names))]
    picked = [index for group in itertools.zip_longest(*by_class) for index in group if index is not None][:16]
    batch = train_images[picked]
    if augmentation:
        batch = training.augment(batch, ImageDataGenerator(**augmentation), tf.constant([seed, 0]))
    log_picture(run_dir, "augmented_training_images" if augmentation else "training_images", picture_grid(
        [Image.fromarray(np.asarray(image).round().astype(np.uint8)) for image in batch],
        [class_names[train_labels[index]] for index in picked], columns=3, tile=115), settings["initial_epoch"],
        "What the network is trained on: training images at the size it takes, "
        + ("after random augmentation." if augmentation else "not augmented."))
    return run_dir


class TensorBoard(keras.callbacks.TensorBoard):
    """Each epoch's scalars on disk as it ends: Keras' writers flush every two minutes, a kill would lose them."""

    def on_epoch_end(self, epoch, logs=None):
        with written(self.log_dir, self._writers.values()):
            super().on_epoch_end(epoch, logs)


_writers = {}  # one writer, so one events file, for each folder the scripts log in


@contextlib.contextmanager
def written(run_dir, writers=()):
    """Summaries written in the block are flushed to disk; an events file not written is a DataError."""
    if run_dir not in _writers:
        _writers[run_dir] = tf.summary.create_file_writer(run_dir)
    try:
        with _writers[run_dir].as_default():
            yield
        for writer in [_writers[run_dir], *writers]:
            writer.flush()
    except tf.errors.OpError:
        raise DataError(f"cannot write TensorBoard's events in '{run_dir}': free some space, or choose another "
                        "--log-dir") from None


def log_hparams(run_dir, hparams, class_names, train_labels, augmentation=None):
    """The run's settings, its training images per class and augmentation (0 where unset), for HParams."""
    counts = np.bincount(train_labels, minlength=len(class_names))
    hparams = {**hparams, "train_images": len(train_labels),
               "images_per_class": ", ".join(f"{name} {count}" for name, count in zip(class_names, counts))}
    if augmentation is not None:
        hparams.update({"rotation_range": 0, "width_shift_range": 0.0, "height_shift_range": 0.0,
                        "shear_range": 0.0, "zoom_range": 0.0, "horizontal_flip": False, **augmentation})
    # HParams takes numbers, booleans and valid text; folder names may hold any bytes.
    hparams = {name: value if isinstance(value, (bool, int, float)) else readable_text(str(value))
               for name, value in hparams.items()}
    with written(run_dir):
        hparams_api.hparams(hparams, trial_id=readable_text(os.path.basename(run_dir)))


def log_picture(run_dir, tag, picture, step, description):
    """One RGB picture (a PIL image) as a TensorBoard image; its description may name files."""
    with written(run_dir):
        tf.summary.image(tag, np.asarray(picture)[None], step=step, description=readable_text(description))


def log_text(run_dir, tag, markdown, step):
    with written(run_dir):
        tf.summary.text(tag, readable_text(markdown), step=step)


# The validation report: per class, and the mistakes.

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


def log_validation(run_dir, images, labels, probabilities, names, class_names, title, step, predictions=None):
    """The confusion matrix, and the mistakes most confident first (24), as pictures; (predictions, confidences)."""
    predictions = probabilities.argmax(axis=1) if predictions is None else predictions
    counts = confusion_matrix(labels, predictions, labels=range(len(class_names)))
    log_picture(run_dir, "confusion_matrix", draw_confusion_matrix(counts, class_names, title),
                step, "Validation images by true class (rows) and predicted class (columns).")
    confidences = probabilities[np.arange(len(predictions)), predictions]
    wrong = mistakes(labels, predictions, confidences)[:24]
    if len(wrong):
        picture = picture_grid([Image.fromarray(images[index]) for index in wrong], [
            f"true: {class_names[labels[index]]}\npredicted: {class_names[predictions[index]]} "
            f"{confidences[index]:.2f}\n{os.path.basename(names[index])}" for index in wrong], columns=2, tile=170)
    else:  # a line of text, not an empty grid
        picture, font = Image.new("RGB", (340, 60), "white"), ImageFont.load_default(size=14)
        ImageDraw.Draw(picture).text((10, 30), _shortened(f"No validation image misclassified: {title}", font, 320),
                                     fill="black", font=font, anchor="lm")
    log_picture(run_dir, "misclassified_validation_images", picture, step,
                "Validation images the model got wrong, the most confident mistakes first.")
    return predictions, confidences


class ValidationReport(keras.callbacks.Callback):
    """The validation set's confusion matrix and mistakes every few epochs; describe() those of the model saved."""

    def __init__(self, run_dir, batches, images, labels, names, class_names, every):
        super().__init__()
        self.run_dir, self.batches, self.images, self.labels = run_dir, batches, images, labels
        self.names, self.class_names, self.every = names, class_names, every

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0 and epoch + 1 < self.params["epochs"]:
            log_validation(self.run_dir, self.images, self.labels, self.model.predict(self.batches, verbose=0),
                           self.names, self.class_names, f"validation set after epoch {epoch + 1}", epoch)

    def describe(self, probabilities, epoch):
        """The model saved, by its probabilities, logged at epoch (from 0): (per-class report, table of mistakes)."""
        predictions, confidences = log_validation(self.run_dir, self.images, self.labels, probabilities, self.names,
                                                  self.class_names, "validation set, the model saved", epoch)
        report = report_table(self.labels, predictions, self.class_names)
        mistakes = mistakes_table(self.names, self.labels, predictions, confidences, self.class_names)
        log_text(self.run_dir, "classification_report", report, epoch)
        log_text(self.run_dir, "misclassified_validation_list", f"```\n{mistakes}\n```", epoch)
        return report, mistakes


def mistakes(labels, predictions, confidences):
    """Indices of the misclassified images, the most confident (confidences: of each prediction) first."""
    wrong = np.flatnonzero(np.asarray(predictions) != np.asarray(labels))
    return wrong[np.argsort(-np.asarray(confidences)[wrong], kind="stable")]


def mistakes_table(names, labels, predictions, confidences, class_names, limit=20):
    """The mistakes, most confident first, a line each: name, true class, predicted class, its probability."""
    return first_lines(["path\ttrue class\tpredicted class\tprobability"] + [
        f"{readable_text(names[index])}\t{class_names[labels[index]]}\t{class_names[predictions[index]]}\t"
        f"{confidences[index]:.4f}" for index in mistakes(labels, predictions, confidences)], limit)


def label_issues(paths, labels, probabilities, class_names):
    """Training images whose label looks wrong (cleanlab's find_label_issues), most suspect first, a line each."""
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
    """Pictures in tile x tile squares, columns to a row, above their captions (TensorBoard shows 350 px wide)."""
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


def draw_confusion_matrix(counts, class_names, title):
    """The confusion matrix as a picture: one row per true class, shaded by the row's share."""
    font = ImageFont.load_default(size=14)
    names = [_shortened(name, font, 150) for name in class_names]
    widest_name = max(font.getlength(name) for name in names)
    cell = max(64, int(widest_name) + 12)
    left = int(max(widest_name, font.getlength("true class"))) + 20  # room for the row names
    top = 80  # room for the title and the column names
    matrix_size = len(names) * cell
    picture = Image.new("RGB", (max(left + matrix_size, int(font.getlength(title))) + 20, top + matrix_size + 12),
                        "white")
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
