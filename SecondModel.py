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

import keras_tools  # first: TensorFlow starts there, without its start-up chatter

import keras
import numpy as np
from keras import layers

import image_files

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


def parse_args():
    parser = argparse.ArgumentParser(description="Train SecondModel, a small CNN with class weights.")
    parser.add_argument("--train-dir", default=TRAIN_DIR, help="one sub-folder of images per class")
    parser.add_argument("--validation-dir", help=f"same classes as --train-dir (default: {VALIDATION_DIR})")
    parser.add_argument("--validation-split", type=float, metavar="FRACTION",
                        help="instead of --validation-dir, hold out this fraction of each class of "
                             "--train-dir, the same photos for the same --seed, near-duplicates together")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="the epoch to stop after")
    parser.add_argument("--initial-epoch", type=int, default=INITIAL_EPOCH,
                        help="epochs already done by the model in --model-file, to resume it")
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
    args = parser.parse_args()
    args.validation_dir = image_files.check_validation_split(args.validation_dir, args.validation_split,
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


def class_weights_of(labels, num_classes):
    """Small classes weigh more: largest class count / class count, counting the images read."""
    class_counts = np.bincount(labels, minlength=num_classes)
    return {index: class_counts.max() / count for index, count in enumerate(class_counts)}


def compile_model(model):
    model.compile(
        optimizer=keras.optimizers.Adadelta(learning_rate=LEARNING_RATE),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )


def make_callbacks(run_dir, validation_report, best_epoch, stop_on_ctrl_c):
    """What runs beside fit: TensorBoard's scalars, the epoch kept, the validation report."""
    # best_epoch before validation_report: it puts the kept epoch back in the model, which the
    # report then describes.
    callbacks = [keras.callbacks.TensorBoard(log_dir=run_dir), best_epoch, validation_report]
    # Smaller steps, or no more epochs, once val_loss has stopped falling for a while.
    if REDUCE_LR_PATIENCE:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=REDUCE_LR_FACTOR, patience=REDUCE_LR_PATIENCE,
            min_lr=MIN_LEARNING_RATE))
    if EARLY_STOPPING_PATIENCE:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss",
                                                       patience=EARLY_STOPPING_PATIENCE))
    return callbacks + [stop_on_ctrl_c]  # last: it keeps each epoch as the others left it


def check_labels(args):
    """--check-labels: the training images whose label looks wrong, a line each, the most suspect first."""
    images, labels, paths, class_names, folds = keras_tools.label_check_folds(
        args, AUGMENTATION, CHECK_LABELS_EPOCHS, CHECK_LABELS_FOLDS)
    keras.utils.set_random_seed(args.seed)
    class_weights = class_weights_of(labels, len(class_names))
    print(f"Training {len(folds)} models of {CHECK_LABELS_EPOCHS} epochs, each on all the training images "
          "but a fold, to classify that fold")
    probabilities = np.zeros((len(labels), len(class_names)))
    for fold, (trained_on, held_out) in enumerate(folds):
        model = build_model(args.image_size, len(class_names))
        compile_model(model)
        model.fit(keras_tools.training_batches(images[trained_on], labels[trained_on], len(class_names),
                                               args.batch_size, args.seed + fold, AUGMENTATION),
                  epochs=CHECK_LABELS_EPOCHS, shuffle=False, class_weight=class_weights, verbose=0)
        # Called, 64 at a time, not predict(): that would trace a new function for each fold's model.
        probabilities[held_out] = np.concatenate([
            model(keras_tools.network_input(images[held_out[start:start + 64]]))
            for start in range(0, len(held_out), 64)])
        print(f"Fold {fold + 1} of {len(folds)} done", flush=True)
    return image_files.label_issues(paths, labels, probabilities, class_names)


def main():
    args = parse_args()
    if args.predict:
        for path, class_name, probability in zip(*keras_tools.predict(args.model_file, args.predict)):
            print(f"{image_files.readable_text(path)}\t{class_name}\t{probability:.4f}")
        return
    if args.check_labels:
        print(check_labels(args))
        return
    class_names, data_summary = keras_tools.check_run(args, AUGMENTATION)
    print(data_summary)
    keras.utils.set_random_seed(args.seed + args.initial_epoch)

    # Not augmented; validation images come in a fixed order so that val_loss compares
    # epoch to epoch.
    (train_images, train_labels), (validation_images, validation_labels, validation_names), run_files, seconds = (
        keras_tools.read_run_images(args, class_names))
    print(f"Read {len(train_images) + len(validation_images)} images in {seconds:.1f} s")
    train_batches = keras_tools.training_batches(train_images, train_labels, len(class_names),
                                                 args.batch_size, args.seed + args.initial_epoch,
                                                 AUGMENTATION)
    validation_batches = keras_tools.validation_batches(validation_images, validation_labels,
                                                        len(class_names), args.batch_size)

    if args.initial_epoch > 0:
        model, best_epoch = keras_tools.load_run(args.model_file, args.image_size, len(class_names),
                                                 compile_model)
        print(f"Resuming {args.model_file} after epoch {args.initial_epoch}")
    else:
        model = build_model(args.image_size, len(class_names))
        compile_model(model)
        best_epoch = keras_tools.BestEpoch()  # the epoch of highest val_accuracy: the model kept
    model.summary()

    class_weights = class_weights_of(train_labels, len(class_names))
    print("Class weights: " + ", ".join(
        f"{name} {class_weights[index]:.3f}" for index, name in enumerate(class_names)))
    run_dir, run_log = keras_tools.start_run(args, "SecondModel", {
        "optimizer": "Adadelta", "learning_rate": LEARNING_RATE, "conv_dropout": CONV_DROPOUT,
        "dense_dropout": DENSE_DROPOUT, "reduce_lr_patience": REDUCE_LR_PATIENCE,
        "early_stopping_patience": EARLY_STOPPING_PATIENCE, "class_weights": True},
        class_names, train_images, train_labels, AUGMENTATION, run_files)
    keras_tools.log_text(run_log, "class_weights", "\n".join(
        ["| class | training images | weight |", "|---|---|---|"]
        + [f"| {name} | {np.sum(train_labels == index)} | {class_weights[index]:.3f} |"
           for index, name in enumerate(class_names)]), step=args.initial_epoch)
    print(f"TensorBoard run: {run_dir}")
    validation_report = keras_tools.ValidationReport(run_log, validation_batches, validation_images,
                                                     validation_labels, validation_names, class_names,
                                                     CONFUSION_MATRIX_EVERY)
    stop_on_ctrl_c = keras_tools.StopOnCtrlC(args.initial_epoch)
    keras_tools.fit_until_stopped(
        model, make_callbacks(run_dir, validation_report, best_epoch, stop_on_ctrl_c), stop_on_ctrl_c,
        train_batches,
        validation_data=validation_batches,
        epochs=args.epochs,
        initial_epoch=args.initial_epoch,
        shuffle=False,  # training_batches shuffles every epoch itself
        class_weight=class_weights,
        verbose=2,
    )

    # The model is the epoch of highest val_accuracy (2018: the last); the last is saved beside it.
    report, stop = keras_tools.save_training(model, sys.argv[0], vars(args), MODEL_FILE, class_names,
                                             best_epoch, stop_on_ctrl_c, validation_report, run_dir)
    if report:
        print(report)
    if stop:
        image_files.exit_stopped(*stop)


if __name__ == "__main__":
    try:
        main()
    except (image_files.DataError, OSError) as error:
        sys.exit(image_files.readable_text(f"SecondModel.py: error: {error}"))
    except KeyboardInterrupt as stop:  # Ctrl-C, SIGTERM or SIGHUP, before training or a second one
        image_files.exit_stopped("SecondModel.py: interrupted; nothing saved", image_files.signal_of(stop))
