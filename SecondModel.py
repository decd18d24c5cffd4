"""SecondModel: the FirstModel network with dropout after every layer and class weights.

No augmentation here: balance the classes first with ClassImageAugmentationSample.py,
or let the class weights (largest class count / class count) make up for small classes.
Ported from Keras 2 (2018) to TensorFlow 2.21 / Keras 3.

    python SecondModel.py                               # trains on data/train
    python SecondModel.py --initial-epoch 30 --epochs 50  # resumes SecondModel.h5 at epoch 31
    tensorboard --logdir logs

Edit the constants below and run again; every run gets its own TensorBoard folder.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's C++ start-up chatter

import h5py
import keras
from keras import layers

import image_folders

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


def parse_args():
    parser = argparse.ArgumentParser(description="Train SecondModel, a small CNN with class weights.")
    parser.add_argument("--train-dir", default=TRAIN_DIR, help="one sub-folder of images per class")
    parser.add_argument("--validation-dir", default=VALIDATION_DIR, help="same classes as --train-dir")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="the epoch to stop after")
    parser.add_argument("--initial-epoch", type=int, default=INITIAL_EPOCH,
                        help="epochs already done by the model in --model-file, to resume it")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE, help="side in pixels")
    parser.add_argument("--log-dir", default=LOG_DIR, help="TensorBoard runs go in sub-folders")
    parser.add_argument("--model-file", default=MODEL_FILE, help="the weights go beside it")
    parser.add_argument("--seed", type=int, default=SEED)
    return parser.parse_args()


def build_model(image_size, num_classes):
    """The FirstModel layers, with dropout after every convolution."""
    return keras.Sequential([
        keras.Input(shape=(image_size, image_size, 3)),
        layers.Conv2D(32, (3, 3)),
        layers.Activation("relu"),
        layers.Dropout(CONV_DROPOUT),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(32, (3, 3)),
        layers.Activation("relu"),
        layers.Dropout(CONV_DROPOUT),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(64, (3, 3)),
        layers.Activation("relu"),
        layers.Dropout(CONV_DROPOUT),
        layers.MaxPooling2D(pool_size=(2, 2)),
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


def load_for_resuming(model_file, image_size, num_classes):
    """The saved model with its Adadelta state, so that training goes on where it stopped.

    keras.models.load_model restores an .h5 model's weights, but not the optimizer's
    accumulators of a Sequential model, so they are read back from the file here.
    """
    model = keras.models.load_model(model_file, compile=False)
    expected_shape = (None, image_size, image_size, 3)
    if model.input_shape != expected_shape or model.output_shape != (None, num_classes):
        raise image_folders.DataError(
            f"cannot resume '{model_file}': it takes {model.input_shape} and gives "
            f"{model.output_shape}, but the data needs {expected_shape} and {num_classes} classes")
    compile_model(model)
    with h5py.File(model_file, "r") as saved:
        if "optimizer_weights" in saved:
            state = saved["optimizer_weights"]
            model.optimizer.build(model.trainable_variables)
            model.optimizer.set_weights([state[name][()] for name in state.attrs["weight_names"]])
    return model


def main():
    args = parse_args()

    # Check the folders and the resume request before anything slow starts.
    class_names, train_counts, validation_counts = image_folders.check_image_folders(
        args.train_dir, args.validation_dir)
    image_folders.check_output_folder(args.model_file)
    if args.epochs <= args.initial_epoch:
        raise image_folders.DataError(
            f"--epochs {args.epochs} must be above --initial-epoch {args.initial_epoch}: "
            "--epochs is the epoch to stop after, not the number of epochs to add")
    if args.initial_epoch > 0 and not os.path.isfile(args.model_file):
        raise image_folders.DataError(
            f"cannot resume: model file '{args.model_file}' does not exist; "
            "train from the start (--initial-epoch 0) or name the saved model with --model-file")
    print(f"Classes: {', '.join(class_names)}")
    print(f"Training images per class: {train_counts}")
    print(f"Validation images per class: {validation_counts}")
    keras.utils.set_random_seed(args.seed + args.initial_epoch)

    # Small classes weigh more: weight = largest class count / class count.
    largest_count = max(train_counts.values())
    class_weights = {index: largest_count / train_counts[name]
                     for index, name in enumerate(class_names)}
    print("Class weights: " + ", ".join(
        f"{name} {class_weights[index]:.3f}" for index, name in enumerate(class_names)))

    # Read every image once, at the size the network takes. No augmentation here;
    # validation comes in a fixed order so that val_loss compares epoch to epoch.
    started = time.perf_counter()
    train_images, train_labels, _ = image_folders.load_images(
        args.train_dir, class_names, args.image_size)
    validation_images, validation_labels, _ = image_folders.load_images(
        args.validation_dir, class_names, args.image_size)
    print(f"Read {len(train_images) + len(validation_images)} images "
          f"in {time.perf_counter() - started:.1f} s")
    train_batches = image_folders.training_batches(
        train_images, train_labels, len(class_names), args.batch_size,
        args.seed + args.initial_epoch)
    validation_batches = image_folders.validation_batches(
        validation_images, validation_labels, len(class_names), args.batch_size)

    if args.initial_epoch > 0:
        model = load_for_resuming(args.model_file, args.image_size, len(class_names))
        print(f"Resuming {args.model_file} after epoch {args.initial_epoch}")
    else:
        model = build_model(args.image_size, len(class_names))
        compile_model(model)
    model.summary()

    # One TensorBoard folder per run, so that runs can be told apart.
    run_dir = os.path.join(args.log_dir, time.strftime("SecondModel-%Y%m%d-%H%M%S"))
    print(f"TensorBoard run: {run_dir}")
    history = model.fit(
        train_batches,
        validation_data=validation_batches,
        epochs=args.epochs,
        initial_epoch=args.initial_epoch,
        class_weight=class_weights,
        callbacks=[keras.callbacks.TensorBoard(log_dir=run_dir)],
        verbose=2,
    )

    weights_file = os.path.splitext(args.model_file)[0] + ".weights.h5"
    model.save(args.model_file)
    model.save_weights(weights_file)
    print(f"Saved {args.model_file} and {weights_file}")
    # The last line sums the run up, like the 2018 README's results.
    print(" - ".join(f"{name}: {history.history[name][-1]:.4f}"
                     for name in ("loss", "accuracy", "val_loss", "val_accuracy")))


if __name__ == "__main__":
    try:
        main()
    except image_folders.DataError as error:
        sys.exit(f"SecondModel.py: error: {error}")
