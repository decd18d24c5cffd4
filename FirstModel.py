"""FirstModel: a small CNN trained from scratch on a few hundred images, with augmentation.

After the Keras blog post "Building powerful image classification models using
very little data" (2016), ported from Keras 2 (2018) to TensorFlow 2.21 / Keras 3.

    python FirstModel.py                 # trains on data/train, checks on data/validation
    tensorboard --logdir logs            # compare the runs

Edit the constants below and run again; every run gets its own TensorBoard folder.
"""

import argparse
import sys

import image_tools  # before TensorFlow: it starts TensorFlow without its start-up chatter

import keras
import tensorflow as tf
from keras import layers
from tensorflow.keras.preprocessing.image import ImageDataGenerator

# Data and outputs.
TRAIN_DIR = "data/train"
VALIDATION_DIR = "data/validation"
LOG_DIR = "logs"
MODEL_FILE = "FirstModel.h5"

# Hyperparameters, those of the 2018 script unless a comment says otherwise.
IMAGE_SIZE = 150  # images are resized to IMAGE_SIZE x IMAGE_SIZE
BATCH_SIZE = 1
EPOCHS = 50
INITIAL_EPOCH = 0  # above 0, training resumes the model saved in MODEL_FILE
LEARNING_RATE = 1.0  # Adadelta's default in Keras 2; Keras 3's default (0.001) barely learns
DROPOUT = 0.5
# Augmentation, as ImageDataGenerator takes it. Rotation and shifts are new since 2018
# (it had none): measured better on held-out photos, see the README's "Generalisation".
ROTATION_RANGE = 15  # degrees either way
WIDTH_SHIFT_RANGE = 0.1  # fraction of the width, either way
HEIGHT_SHIFT_RANGE = 0.1
SHEAR_RANGE = 0.2  # degrees, as ImageDataGenerator reads it: a barely visible slant
ZOOM_RANGE = 0.2
HORIZONTAL_FLIP = True
SEED = 2018

# Training control on val_loss, measured in the README's "Generalisation" section; 0 is off.
REDUCE_LR_PATIENCE = 0  # after this many epochs without a lower val_loss ...
REDUCE_LR_FACTOR = 0.5  # ... the learning rate is multiplied by this,
MIN_LEARNING_RATE = 0.001  # down to this
EARLY_STOPPING_PATIENCE = 0  # training stops after this many epochs without a lower val_loss

# TensorBoard: a confusion matrix of the validation set every this many epochs, and at the end.
CONFUSION_MATRIX_EVERY = 10


def parse_args():
    parser = argparse.ArgumentParser(description="Train FirstModel, a small CNN with augmentation.")
    parser.add_argument("--train-dir", default=TRAIN_DIR, help="one sub-folder of images per class")
    parser.add_argument("--validation-dir", default=VALIDATION_DIR, help="same classes as --train-dir")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="the epoch to stop after")
    parser.add_argument("--initial-epoch", type=int, default=INITIAL_EPOCH,
                        help="epochs already done by the model in --model-file, to resume it")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE, help="side in pixels")
    parser.add_argument("--log-dir", default=LOG_DIR, help="TensorBoard runs go in sub-folders")
    parser.add_argument("--model-file", default=MODEL_FILE,
                        help="where the model is saved, its weights beside it; --predict and "
                             "--initial-epoch load it: a model file can run code, so load only "
                             "models you made or trust")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--predict", metavar="PATH",
                        help="classify this image, or every image under this folder, with the "
                             "model in --model-file, instead of training")
    return parser.parse_args()


def build_model(image_size, num_classes):
    """Three convolution blocks and a small dense head, as in 2018."""
    return keras.Sequential([
        keras.Input(shape=(image_size, image_size, 3)),
        layers.Conv2D(32, (3, 3)),
        layers.Activation("relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(32, (3, 3)),
        layers.Activation("relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(64, (3, 3)),
        layers.Activation("relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Flatten(),
        layers.Dense(64),
        layers.Activation("relu"),
        layers.Dropout(DROPOUT),
        layers.Dense(num_classes),
        layers.Activation("softmax"),
    ])


def compile_model(model):
    model.compile(
        optimizer=keras.optimizers.Adadelta(learning_rate=LEARNING_RATE),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )


def main():
    args = parse_args()
    if args.predict:
        image_tools.predict_with_saved_model(args.model_file, args.predict)
        return

    # Check the folders and the resume request before anything slow starts.
    class_names, train_counts, validation_counts = image_tools.check_model_run(args)
    print(f"Classes: {', '.join(class_names)}")
    print(f"Training images per class: {train_counts}")
    print(f"Validation images per class: {validation_counts}")
    keras.utils.set_random_seed(args.seed + args.initial_epoch)

    # Read every image once, at the size the network takes; augment in memory.
    train_images, train_labels, validation_images, validation_labels = (
        image_tools.load_training_and_validation(
            args.train_dir, args.validation_dir, class_names, args.image_size))
    augmentation = ImageDataGenerator(
        rotation_range=ROTATION_RANGE,
        width_shift_range=WIDTH_SHIFT_RANGE,
        height_shift_range=HEIGHT_SHIFT_RANGE,
        shear_range=SHEAR_RANGE,
        zoom_range=ZOOM_RANGE,
        horizontal_flip=HORIZONTAL_FLIP,
    )
    train_batches = image_tools.training_batches(
        train_images, train_labels, len(class_names), args.batch_size,
        args.seed + args.initial_epoch, augmentation)
    # Validation images are not augmented, and come in a fixed order so that val_loss
    # compares epoch to epoch.
    validation_batches = image_tools.validation_batches(
        validation_images, validation_labels, len(class_names), args.batch_size)

    if args.initial_epoch > 0:
        model, best_epoch = image_tools.resume_run(
            args.model_file, args.image_size, len(class_names), compile_model)
        print(f"Resuming {args.model_file} after epoch {args.initial_epoch}")
    else:
        model = build_model(args.image_size, len(class_names))
        compile_model(model)
        best_epoch = image_tools.BestEpoch()
    model.summary()

    # One TensorBoard folder per run, so that runs can be told apart: Keras writes the
    # epoch scalars in its train/ and validation/ folders, the rest goes in the folder itself.
    run_dir = image_tools.new_run_folder(args.log_dir, "FirstModel")
    print(f"TensorBoard run: {run_dir}")
    run_log = tf.summary.create_file_writer(run_dir)
    # The settings, for the HParams dashboard to set this run beside the others.
    image_tools.log_hparams(run_log, run_dir, {
        "script": "FirstModel",
        **image_tools.training_hparams(args, model, class_names, train_labels),
        "conv_dropout": 0.0,
        "dense_dropout": DROPOUT,
        "rotation_range": ROTATION_RANGE,
        "width_shift_range": WIDTH_SHIFT_RANGE,
        "height_shift_range": HEIGHT_SHIFT_RANGE,
        "shear_range": SHEAR_RANGE,
        "zoom_range": ZOOM_RANGE,
        "horizontal_flip": HORIZONTAL_FLIP,
        "reduce_lr_patience": REDUCE_LR_PATIENCE,
        "early_stopping_patience": EARLY_STOPPING_PATIENCE,
        "class_weights": False,
    })
    # What augmentation does to the training images, as the network gets them.
    image_tools.log_training_images(run_log, train_images, train_labels, class_names, augmentation,
                                    args.seed, step=args.initial_epoch)
    validation_report = image_tools.ValidationReport(
        run_log, validation_batches, validation_labels, class_names, CONFUSION_MATRIX_EVERY)
    callbacks = [keras.callbacks.TensorBoard(log_dir=run_dir), validation_report, best_epoch]
    # Smaller steps, or no more epochs, once val_loss has stopped falling for a while.
    if REDUCE_LR_PATIENCE:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=REDUCE_LR_FACTOR, patience=REDUCE_LR_PATIENCE,
            min_lr=MIN_LEARNING_RATE))
    if EARLY_STOPPING_PATIENCE:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss",
                                                       patience=EARLY_STOPPING_PATIENCE))
    # Last, so that it keeps each epoch as the others have left it.
    stop_on_ctrl_c = image_tools.StopOnCtrlC(args.initial_epoch)
    callbacks.append(stop_on_ctrl_c)
    try:
        history = model.fit(
            train_batches,
            validation_data=validation_batches,
            epochs=args.epochs,
            initial_epoch=args.initial_epoch,
            shuffle=False,  # training_batches shuffles every epoch itself
            callbacks=callbacks,
            verbose=2,
        )
    except image_tools.EpochInterrupted:
        # Ctrl-C half-way through an epoch: the model goes back to the last complete epoch.
        stop_on_ctrl_c.restore_last_epoch()
        for callback in callbacks:
            callback.on_train_end()  # as fit does at its end: close the logs, report
    if stop_on_ctrl_c.interrupted:
        # Keep the complete epochs, under a name that says so, and say how to go on.
        sys.exit(image_tools.save_interrupted_run(
            model, args.model_file, class_names, best_epoch, stop_on_ctrl_c, sys.argv[0], vars(args)))

    # The last epoch is the model, as in 2018; the epoch of lowest val_loss is kept beside it.
    last_metrics = image_tools.save_finished_run(
        model, args.model_file, class_names, best_epoch, history, args.initial_epoch)
    print(f"Validation set, per class:\n{validation_report.report}")
    # The last line sums the run up, like the 2018 README's results.
    print(" - ".join(f"{name}: {last_metrics[name]:.4f}"
                     for name in ("loss", "accuracy", "val_loss", "val_accuracy")))


if __name__ == "__main__":
    try:
        main()
    except (image_tools.DataError, OSError) as error:
        sys.exit(f"FirstModel.py: error: {error}")
    except KeyboardInterrupt:
        sys.exit("FirstModel.py: interrupted; nothing saved")
