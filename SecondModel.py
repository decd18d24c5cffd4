"""SecondModel: the FirstModel network with dropout after every layer and class weights.

No augmentation here: balance the classes first with ClassImageAugmentationSample.py,
or let the class weights (largest class count / class count) make up for small classes.
Ported from Keras 2 (2018) to TensorFlow 2.21 / Keras 3.

    python SecondModel.py                                 # trains on data/train
    python SecondModel.py --initial-epoch 30 --epochs 50  # resumes SecondModel.h5 at epoch 31
    tensorboard --logdir logs

Edit the constants below and run again; every run gets its own TensorBoard folder.
"""

import argparse
import sys
import time

import runs

runs.start("SecondModel.py")  # first: a stop is one line from now on, and TensorFlow starts quietly

import keras
import numpy as np
from keras import layers

import photos
import reports
import training

# Data and outputs.
TRAIN_DIR = "data/train"
VALIDATION_DIR = "data/validation"
LOG_DIR = "logs"
MODEL_FILE = "SecondModel.h5"

# Hyperparameters of the 2018 script.
IMAGE_SIZE = 150  # images are resized to IMAGE_SIZE x IMAGE_SIZE
BATCH_SIZE = 1
EPOCHS = 50
INITIAL_EPOCH = 0  # above 0, training resumes the model saved in MODEL_FILE
LEARNING_RATE = 1.0  # Adadelta's default in Keras 2; Keras 3's default (0.001) barely learns
CONV_DROPOUT = 0.10
DENSE_DROPOUT = 0.25
SEED = 2018

# Augmentation, in ImageDataGenerator's keyword arguments: none for SecondModel, whose
# classes are balanced beforehand or by class weights.
AUGMENTATION = {}

# Training control on val_loss, measured in docs/generalisation.md; 0 is off.
REDUCE_LR_PATIENCE = 0  # after this many epochs without a lower val_loss ...
REDUCE_LR_FACTOR = 0.5  # ... the learning rate is multiplied by this,
MIN_LEARNING_RATE = 0.001  # down to this
EARLY_STOPPING_PATIENCE = 0  # training stops after this many epochs without a lower val_loss

# TensorBoard: a confusion matrix of the validation set every this many epochs, and at the end.
CONFUSION_MATRIX_EVERY = 10

# --check-labels: this many short trainings, each of this many epochs, one per fold of the
# training images: about as long as one run of EPOCHS epochs.
CHECK_LABELS_FOLDS = 5
CHECK_LABELS_EPOCHS = 10

# --export: the int8 file's ranges are measured on this many training photos, chosen at random.
CALIBRATION_PHOTOS = 300


def parse_args():
    parser = argparse.ArgumentParser(description="Train SecondModel, a small CNN with class weights.")
    parser.add_argument("--train-dir", default=TRAIN_DIR, help="one sub-folder of images per class")
    parser.add_argument("--validation-dir", help=f"same classes as --train-dir (default: {VALIDATION_DIR})")
    parser.add_argument("--validation-split", type=float, metavar="FRACTION",
                        help="instead of --validation-dir, hold out this fraction of each class of "
                             "--train-dir, the same photos for the same --seed, near-duplicates together")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="the epoch to stop after")
    parser.add_argument("--initial-epoch", type=int, default=INITIAL_EPOCH,
                        help="epochs a finished run of --model-file did, to go on to --epochs")
    parser.add_argument("--restart", action="store_true",
                        help="start again, keeping an unfinished run of --model-file aside (a stopped run "
                             "otherwise goes on when the same command is run again)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE, help="side in pixels")
    parser.add_argument("--log-dir", default=LOG_DIR, help="TensorBoard runs go in sub-folders")
    parser.add_argument("--model-file", default=MODEL_FILE,
                        help="where the epoch of highest val_accuracy is saved (the last "
                             "epoch beside it, as <name>.last.h5); --predict and --initial-epoch "
                             "load them: a model file can run code, so load only models you made "
                             "or trust")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--predict", metavar="PATH",
                        help="classify this image, or every image under this folder, with the "
                             "model in --model-file, instead of training")
    parser.add_argument("--check-labels", action="store_true",
                        help=f"instead of training, list the training images whose label looks "
                             f"wrong, the most suspect first: each image is classified by a model "
                             f"that did not see it ({CHECK_LABELS_FOLDS} short trainings of "
                             f"{CHECK_LABELS_EPOCHS} epochs, about as long as one training run); "
                             f"nothing is moved or changed")
    parser.add_argument("--export", action="store_true",
                        help="instead of training, write the model in --model-file as LiteRT files for apps "
                             "beside it (<name>.tflite, <name>.int8.tflite, <name>.labels.txt), and compare "
                             "them with it on the validation photos (<name>.export.txt)")
    args = parser.parse_args()
    args.validation_dir = photos.check_validation_split(args.validation_dir, args.validation_split, args.seed,
                                                        VALIDATION_DIR)
    return args


def build_model(image_size, num_classes):
    """The FirstModel layers, with dropout after every convolution."""
    return keras.Sequential([
        keras.Input(shape=(image_size, image_size, 3)),
        layers.Conv2D(32, (3, 3)),
        layers.Activation("relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Dropout(CONV_DROPOUT),
        layers.Conv2D(32, (3, 3)),
        layers.Activation("relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Dropout(CONV_DROPOUT),
        layers.Conv2D(64, (3, 3)),
        layers.Activation("relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Dropout(CONV_DROPOUT),
        layers.Flatten(),
        layers.Dense(64),
        layers.Activation("relu"),
        layers.Dropout(DENSE_DROPOUT),
        layers.Dense(num_classes),
        layers.Activation("softmax"),
    ])


def compile_model(model):
    model.compile(
        optimizer=keras.optimizers.Adadelta(learning_rate=LEARNING_RATE),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )


def class_weights_of(labels, num_classes):
    """Small classes weigh more: largest class count / class count, counting the images read."""
    class_counts = np.bincount(labels, minlength=num_classes)
    return {index: class_counts.max() / count for index, count in enumerate(class_counts)}


def make_callbacks(run_dir, validation_report, checkpoint):
    """What runs beside fit: TensorBoard's scalars, the epoch kept, the validation report, and the
    run's state saved after every epoch, last, as the others leave it."""
    callbacks = [reports.TensorBoard(log_dir=run_dir), validation_report]
    # Smaller steps, or no more epochs, once val_loss has stopped falling for a while.
    if REDUCE_LR_PATIENCE:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=REDUCE_LR_FACTOR, patience=REDUCE_LR_PATIENCE,
            min_lr=MIN_LEARNING_RATE))
    if EARLY_STOPPING_PATIENCE:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss",
                                                       patience=EARLY_STOPPING_PATIENCE))
    return callbacks + [checkpoint]


def check_labels(args):
    """--check-labels: the training images whose label looks wrong, a line each, the most suspect first."""
    training.check_training_settings(CHECK_LABELS_EPOCHS, 0, args.batch_size, args.image_size, AUGMENTATION)
    images, labels, paths, class_names, folds = training.label_check_folds(
        args.train_dir, args.image_size, args.seed, CHECK_LABELS_FOLDS)
    keras.utils.set_random_seed(args.seed)
    class_weights = class_weights_of(labels, len(class_names))
    print(f"Training {len(folds)} models of {CHECK_LABELS_EPOCHS} epochs, each on all the training images "
          "but a fold, to classify that fold")
    probabilities = np.zeros((len(labels), len(class_names)))
    for fold, (trained_on, held_out) in enumerate(folds):
        model = build_model(args.image_size, len(class_names))
        compile_model(model)
        model.fit(training.training_batches(images[trained_on], labels[trained_on], len(class_names),
                                            args.batch_size, args.seed + fold, AUGMENTATION),
                  epochs=CHECK_LABELS_EPOCHS, shuffle=False, class_weight=class_weights, verbose=0)
        probabilities[held_out] = training.probabilities(model, images[held_out])
        print(f"Fold {fold + 1} of {len(folds)} done", flush=True)
    return reports.label_issues(paths, labels, probabilities, class_names)


def main():
    args = parse_args()
    training.check_model_file_use(args.model_file, args.predict)
    if args.predict:
        for path, class_name, probability in zip(*training.predict(args.model_file, args.predict)):
            print(f"{runs.readable_text(path)}\t{class_name}\t{probability:.4f}")
        return
    if args.check_labels:
        print(check_labels(args))
        return
    if args.export:
        saved, report, warning = training.export_litert(args.model_file, "SecondModel", args.train_dir,
                                                        args.validation_dir, args.validation_split, args.seed,
                                                        CALIBRATION_PHOTOS)
        print(f"Saved {', '.join(saved)}\n{report}", end="")
        if warning:
            runs.warn(warning)
        return

    # Check the folders and settings before anything slow starts.
    class_names, train_counts, validation_counts = photos.check_image_folders(
        args.train_dir, args.validation_dir, args.validation_split)
    runs.check_output_file(args.model_file, ".h5")
    reports.check_log_folder(args.log_dir)
    training.check_training_settings(args.epochs, args.initial_epoch, args.batch_size, args.image_size, AUGMENTATION)
    print(f"Classes: {', '.join(class_names)}\nTraining images per class: {train_counts}\nValidation images per "
          f"class: {validation_counts or f'{args.validation_split:.0%} of each class above, by name and --seed'}")
    # What a run must repeat to go on after a stop, and what TensorBoard's HParams dashboard shows.
    settings = {
        "script": "SecondModel", "classes": ", ".join(class_names), "train_dir": args.train_dir,
        "validation_dir": args.validation_dir or "", "validation_split": args.validation_split or 0.0,
        "seed": args.seed, "image_size": args.image_size, "batch_size": args.batch_size, "epochs": args.epochs,
        "initial_epoch": args.initial_epoch, "optimizer": "Adadelta", "learning_rate": LEARNING_RATE,
        "conv_dropout": CONV_DROPOUT, "dense_dropout": DENSE_DROPOUT, "reduce_lr_patience": REDUCE_LR_PATIENCE,
        "early_stopping_patience": EARLY_STOPPING_PATIENCE, "class_weights": True, **AUGMENTATION}

    with runs.lock(args.model_file):
        # A stopped run of the same command goes on from its last complete epoch.
        checkpoint = training.Checkpoint(args.model_file, settings, args.initial_epoch, args.restart)
        if checkpoint.moved_aside:
            print(f"Starting again; the unfinished run is kept aside as {checkpoint.moved_aside}")
        keras.utils.set_random_seed(args.seed + checkpoint.epoch)

        if args.initial_epoch and not checkpoint.recorded:
            model = training.load_run(args.model_file, args.initial_epoch, settings, compile_model, checkpoint)
            print(f"Resuming {args.model_file} after epoch {args.initial_epoch}")
        else:
            model = build_model(args.image_size, len(class_names))
            compile_model(model)
            if checkpoint.recorded:
                checkpoint.restore(model)
                print(f"Going on from epoch {checkpoint.epoch} of an unfinished run ({checkpoint.path})")
        model.summary()

        # Not augmented; validation images come in a fixed order so that val_loss compares
        # epoch to epoch.
        started = time.perf_counter()
        (train_images, train_labels, _), (validation_images, validation_labels, validation_names), run_files = (
            photos.read_training_and_validation(args.train_dir, args.validation_dir, class_names, args.image_size,
                                                args.validation_split, args.seed))
        print(f"Read {len(train_images) + len(validation_images)} images in {time.perf_counter() - started:.1f} s")
        train_batches = training.training_batches(train_images, train_labels, len(class_names), args.batch_size,
                                                  args.seed + checkpoint.epoch, AUGMENTATION)
        validation_batches = training.validation_batches(validation_images, validation_labels, len(class_names),
                                                         args.batch_size)
        class_weights = class_weights_of(train_labels, len(class_names))
        print("Class weights: " + ", ".join(
            f"{name} {class_weights[index]:.3f}" for index, name in enumerate(class_names)))

        # A run going on logs in its own TensorBoard run, the epochs numbered on.
        checkpoint.run_dir = checkpoint.run_dir or reports.start_run(
            args.log_dir, "SecondModel", settings, class_names, train_images, train_labels, AUGMENTATION, args.seed,
            run_files)
        print(f"TensorBoard run: {checkpoint.run_dir}")
        reports.log_text(checkpoint.run_dir, "class_weights", "\n".join(
            ["| class | training images | weight |", "|---|---|---|"]
            + [f"| {name} | {np.sum(train_labels == index)} | {class_weights[index]:.3f} |"
               for index, name in enumerate(class_names)]), step=checkpoint.epoch)
        validation_report = reports.ValidationReport(checkpoint.run_dir, validation_batches, validation_images,
                                                     validation_labels, validation_names, class_names,
                                                     CONFUSION_MATRIX_EVERY)
        model.fit(
            train_batches,
            validation_data=validation_batches,
            epochs=args.epochs,
            initial_epoch=checkpoint.epoch,
            shuffle=False,  # training_batches shuffles every epoch itself
            class_weight=class_weights,
            callbacks=make_callbacks(checkpoint.run_dir, validation_report, checkpoint),
            verbose=2,
        )

        # The model kept is the epoch of highest val_accuracy (2018: the last); the last is saved beside it.
        kept, last = checkpoint.kept_and_last(model.get_weights())
        kept_epoch, kept_metrics, kept_weights = kept
        model.set_weights(kept_weights)
        report, mistakes = validation_report.describe(training.probabilities(model, validation_images),
                                                      checkpoint.epoch - 1)
        saved = training.save_model_files(model, args.model_file, class_names, kept, last, settings)
        checkpoint.remove()
    runs.on_stop(f"the model is saved in {args.model_file}")

    print(f"Saved {', '.join(saved)}\nKept in {args.model_file}: epoch {kept_epoch} of {checkpoint.epoch}, the one of "
          f"highest val_accuracy; the last epoch, which --initial-epoch goes on from, is in {saved[2]}")
    print(f"To classify photos with it: python {sys.argv[0]} --predict PHOTOS"
          + ("" if args.model_file == MODEL_FILE else f" --model-file {args.model_file}"))
    print(f"Validation set, per class:\n{report}\nMisclassified validation images, most confident first:\n{mistakes}")
    # The last line sums the kept epoch up, like the 2018 README's results.
    print(" - ".join(f"{name}: {kept_metrics[name]:.4f}" for name in ("loss", "accuracy", "val_loss", "val_accuracy")))


if __name__ == "__main__":
    try:
        main()
    except (runs.DataError, OSError) as error:
        sys.exit(runs.readable_text(f"SecondModel.py: error: {error}"))
