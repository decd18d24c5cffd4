"""TransferModel: a network pretrained on ImageNet, with a small classifier trained on top.

The Keras blog post's next step after training from scratch: its "bottleneck features".
Stage 1 computes the frozen convolutional base's features of every photo once and trains
a small classifier on them (seconds); stage 2 fine-tunes the base's last block with the
classifier, on augmented photos, at a low learning rate (about 8 s an epoch on 2 cores).

    python TransferModel.py                 # trains on data/train, checks on data/validation
    python TransferModel.py --predict new/  # classifies photos with the saved TransferModel.h5
    python TransferModel.py --check-labels  # training photos whose label looks wrong
    tensorboard --logdir logs               # beside the other models' runs

On first use Keras downloads the base's ImageNet weights into its cache (~/.keras/models,
or $KERAS_HOME/models); offline, --weights names a copy. Edit the constants below and run again.
"""

import argparse
import os
import sys
import tempfile
import time
import warnings

import runs

runs.start("TransferModel.py")  # first: a stop is one line from now on, and TensorFlow starts quietly

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
MODEL_FILE = "TransferModel.h5"

# The pretrained network: MobileNetV2 (9 MB, fast on a CPU, TensorFlow's tutorial's), VGG16 (the
# blog post's, 58 MB) or EfficientNetB0 (16 MB). Each: its keras.applications module, whose
# preprocess_input the network receives, the first layer of its last block, the one stage 2 trains,
# and the name of the weights file Keras downloads (MobileNetV2 has one per size).
BACKBONE = "MobileNetV2"
BACKBONES = {
    "MobileNetV2": ("mobilenet_v2", "block_16_expand",
                    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{}_no_top.h5"),
    "VGG16": ("vgg16", "block5_conv1", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "EfficientNetB0": ("efficientnet", "block7a_expand_conv", "efficientnetb0_notop.h5"),
}
WEIGHTS = None  # None: Keras' ImageNet weights, downloaded once; or the path of a copy (--weights)

# Hyperparameters, chosen on two real photo sets in docs/transfer-learning.md.
IMAGE_SIZE = 224  # the size the ImageNet weights were trained at
BATCH_SIZE = 32
FEATURE_EPOCHS = 30  # stage 1: the classifier alone, on the base's features
FINE_TUNE_EPOCHS = 10  # stage 2: the last block too; 0 turns stage 2 off
EPOCHS = FEATURE_EPOCHS + FINE_TUNE_EPOCHS
INITIAL_EPOCH = 0  # above 0, training resumes the model saved in MODEL_FILE
FEATURE_LEARNING_RATE = 0.001  # Adam
FINE_TUNE_LEARNING_RATE = 0.00001  # Adam, small: the pretrained weights only need nudging
DROPOUT = 0.2
SEED = 2018

# Stage 2's augmentation, in ImageDataGenerator's keyword arguments (stage 1 trains on features
# computed once, of the photos as they are).
AUGMENTATION = dict(
    rotation_range=15,
    width_shift_range=0.1,
    height_shift_range=0.1,
    zoom_range=0.2,
    horizontal_flip=True,
)

# TensorBoard: a confusion matrix of the validation set every this many epochs, and at the end.
CONFUSION_MATRIX_EVERY = 10

# --check-labels: a classifier trained on the features of all the training images but a fold,
# for each of this many folds, classifies that fold.
CHECK_LABELS_FOLDS = 5

# --export: the int8 file's ranges are measured on this many training photos, chosen at random.
CALIBRATION_PHOTOS = 300

SMALLEST_IMAGE = 32  # keras.applications' networks take 32 pixels or more


def parse_args():
    parser = argparse.ArgumentParser(description=(
        f"Train TransferModel: {BACKBONE} pretrained on ImageNet with a small classifier on top. "
        f"Stage 1 (epochs 1 to {FEATURE_EPOCHS}) trains the classifier on the base's features, "
        f"computed once (about 20 s for 428 photos on 2 cores); stage 2 (the epochs after) "
        f"fine-tunes the base's last block too, 7 to 13 s an epoch for 341 photos on 2 cores."))
    parser.add_argument("--train-dir", default=TRAIN_DIR, help="one sub-folder of images per class")
    parser.add_argument("--validation-dir", help=f"same classes as --train-dir (default: {VALIDATION_DIR})")
    parser.add_argument("--validation-split", type=float, metavar="FRACTION",
                        help="instead of --validation-dir, hold out this fraction of each class of "
                             "--train-dir, the same photos for the same --seed, near-duplicates together")
    parser.add_argument("--epochs", type=int, default=EPOCHS,
                        help=f"the epoch to stop after; above {FEATURE_EPOCHS}, stage 2")
    parser.add_argument("--initial-epoch", type=int, default=INITIAL_EPOCH,
                        help="epochs a finished run of --model-file did, to go on to --epochs")
    parser.add_argument("--restart", action="store_true",
                        help="start again, keeping an unfinished run of --model-file aside (a stopped run "
                             "otherwise goes on when the same command is run again)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE, help="side in pixels")
    parser.add_argument("--log-dir", default=LOG_DIR, help="TensorBoard runs go in sub-folders")
    parser.add_argument("--model-file", default=MODEL_FILE,
                        help="where the epoch of highest val_accuracy is saved (the last epoch "
                             "beside it, as <name>.last.h5); --predict and --initial-epoch load "
                             "them: a model file can run code, so load only models you made or trust")
    parser.add_argument("--weights", default=WEIGHTS, metavar="FILE",
                        help=f"{BACKBONE}'s ImageNet weights without its top, from this file "
                             "instead of Keras' cache (where Keras downloads them on first use)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--predict", metavar="PATH",
                        help="classify this image, or every image under this folder, with the "
                             "model in --model-file, instead of training")
    parser.add_argument("--check-labels", action="store_true",
                        help=f"instead of training, list the training images whose label looks "
                             f"wrong, the most suspect first: each image is classified by a "
                             f"classifier trained on the features of the others ({CHECK_LABELS_FOLDS} "
                             f"folds, seconds); nothing is moved or changed")
    parser.add_argument("--export", action="store_true",
                        help="instead of training, write the model in --model-file as LiteRT files for apps "
                             "beside it (<name>.tflite, <name>.int8.tflite, <name>.labels.txt), and compare "
                             "them with it on the validation photos (<name>.export.txt)")
    args = parser.parse_args()
    args.validation_dir = photos.check_validation_split(args.validation_dir, args.validation_split, args.seed,
                                                        VALIDATION_DIR)
    return args


def keras_cache():
    """The folder Keras reads its downloads from, found as Keras 3 finds it: $KERAS_HOME if set (even
    empty) or ~/.keras, and .keras in the temporary folder where that cannot be written."""
    home = os.path.expanduser("~")
    home = os.environ["KERAS_HOME"] if "KERAS_HOME" in os.environ else os.path.join(
        home if os.access(home, os.W_OK) else "/tmp", ".keras")
    if not os.access(os.path.expanduser(home), os.W_OK):
        home = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return os.path.join(os.path.expanduser(home), "models")


def weights_file_name(image_size):
    """The file Keras keeps the backbone's weights in, for this --image-size."""
    # Keras has MobileNetV2 files for these sizes, and takes the 224 one for the others.
    return BACKBONES[BACKBONE][2].format(image_size if image_size in (96, 128, 160, 192, 224) else 224)


def load_base(image_size, weights_file):
    """The backbone's convolutional base, without its classifier, with ImageNet weights: Keras'
    (downloaded into its cache on first use) or weights_file's. One line when they cannot be had."""
    cache = keras_cache()
    if weights_file and not os.path.isfile(weights_file):
        raise runs.DataError(f"--weights '{weights_file}' is not a file")
    try:
        with warnings.catch_warnings():  # a file of other shapes: a warning a layer, then the error
            warnings.simplefilter("ignore")
            return getattr(keras.applications, BACKBONE)(
                input_shape=(image_size, image_size, 3), include_top=False,
                weights=weights_file or "imagenet", name="base")
    except Exception as error:  # Keras raises a plain Exception when a download fails
        message = str(error).splitlines()[0]
        if message.startswith("URL fetch failure on "):
            address, reason = message.removeprefix("URL fetch failure on ").split(": ", 1)
            reason = reason.removeprefix("None -- ")  # urllib gives no error number offline
            raise runs.DataError(
                f"cannot download {BACKBONE}'s ImageNet weights ({reason}): fetch {address} on a machine "
                f"with internet access and put it in '{cache}', or name a copy with --weights FILE") from None
        source = weights_file or os.path.join(cache, weights_file_name(image_size))
        if isinstance(error, OSError) and not os.path.isfile(source):  # Keras' folder is a file, or cannot be made
            raise runs.DataError(
                f"cannot keep {BACKBONE}'s ImageNet weights in '{cache}' ({runs.why_not_written(error)}): set "
                "KERAS_HOME to a folder you can write, or name a copy with --weights FILE") from None
        advice = "" if weights_file else ": delete it (Keras downloads it again) or put a whole copy in its place"
        raise runs.DataError(
            f"'{source}' does not hold {BACKBONE}'s ImageNet weights without its top at this --image-size "
            f"({type(error).__name__}: {message[:200]}){advice}; or name another file with --weights") from None


def preprocessing_layer():
    """The backbone's preprocess_input, on network_input's pixels (0 to 1), as a built-in layer, so
    that the saved model loads in any Keras program: every keras.applications preprocess_input is
    a per-channel affine map (a scale, a shift, RGB to BGR), read here off the function itself."""
    preprocess_input = getattr(keras.applications, BACKBONES[BACKBONE][0]).preprocess_input
    probes = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype="float32")[:, None, None, :]
    outputs = np.asarray(preprocess_input(probes))[:, 0, 0, :]
    layer = layers.Conv2D(3, 1, trainable=False, name="preprocess_input")
    layer.build((None, None, None, 3))
    layer.set_weights([(outputs[1:] - outputs[0])[None, None], outputs[0]])
    return layer


def build_model(base, num_classes):
    """The base, frozen, and a small classifier on its pooled features, a model of its own that
    stage 1 trains on features computed once. The model takes network_input's pixels."""
    base.trainable = False
    inputs = keras.Input(shape=base.input_shape[1:])
    preprocessed = preprocessing_layer()(inputs)
    features = layers.GlobalAveragePooling2D()(base(preprocessed))
    classifier = keras.Sequential([
        keras.Input(shape=features.shape[1:]),
        layers.Dropout(DROPOUT),
        layers.Dense(num_classes, activation="softmax"),
    ], name="classifier")
    return keras.Model(inputs, classifier(features))


def set_stage(model, stage):
    """Make the model ready for stage 1 (its classifier alone is trained, on features; returns the
    classifier, compiled) or 2 (the base's last block and the classifier; returns the model, compiled)."""
    base, classifier = model.get_layer("base"), model.get_layer("classifier")
    base.trainable = stage == 2
    if stage == 2:
        first_trained = base.layers.index(base.get_layer(BACKBONES[BACKBONE][1]))
        for index, layer in enumerate(base.layers):
            # Batch normalisation frozen, so in inference mode, as the Keras fine-tuning guide says:
            # its statistics would drift on a few hundred photos. (Calling the base with
            # training=False does not hold in Keras 3's fit: keras-team/keras#20285.)
            layer.trainable = index >= first_trained and not isinstance(layer, layers.BatchNormalization)
    trained, learning_rate = (classifier, FEATURE_LEARNING_RATE) if stage == 1 else (model, FINE_TUNE_LEARNING_RATE)
    trained.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="categorical_crossentropy",
                    metrics=["accuracy"])
    return trained


def features_of(model, image_sets, batch_size):
    """The base's pooled features of each set of uint8 images, the classifier's input: the slow
    part, done once, in one call (a call per set would trace the network again)."""
    extractor = keras.Model(model.inputs, model.get_layer("classifier").input)
    features = extractor.predict(training.network_input(np.concatenate(image_sets)), batch_size=batch_size,
                                 verbose=0)
    return np.split(features, np.cumsum([len(images) for images in image_sets])[:-1])


def check_labels(args):
    """--check-labels: the training images whose label looks wrong, a line each, the most suspect first."""
    training.check_training_settings(FEATURE_EPOCHS, 0, args.batch_size, args.image_size, {}, SMALLEST_IMAGE)
    images, labels, paths, class_names, folds = training.label_check_folds(
        args.train_dir, args.image_size, args.seed, CHECK_LABELS_FOLDS)
    model = build_model(load_base(args.image_size, args.weights), len(class_names))
    [features] = features_of(model, [images], args.batch_size)
    one_hot = keras.utils.to_categorical(labels, len(class_names))
    print(f"Training {len(folds)} classifiers of {FEATURE_EPOCHS} epochs on the features of all the "
          "training images but a fold, to classify that fold")
    probabilities = np.zeros((len(labels), len(class_names)))
    initial_weights = model.get_weights()
    for fold, (trained_on, held_out) in enumerate(folds):
        keras.utils.set_random_seed(args.seed + fold)
        model.set_weights(initial_weights)
        classifier = set_stage(model, 1)
        classifier.fit(features[trained_on], one_hot[trained_on], batch_size=args.batch_size,
                       epochs=FEATURE_EPOCHS, verbose=0)
        # Called, not predict(): that would trace a new function for each fold's classifier.
        probabilities[held_out] = classifier(features[held_out])
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
        saved, report, warning = training.export_litert(args.model_file, "TransferModel", args.train_dir,
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
    training.check_training_settings(args.epochs, args.initial_epoch, args.batch_size, args.image_size, AUGMENTATION,
                                     SMALLEST_IMAGE)
    print(f"Classes: {', '.join(class_names)}\nTraining images per class: {train_counts}\nValidation images per "
          f"class: {validation_counts or f'{args.validation_split:.0%} of each class above, by name and --seed'}")
    # What a run must repeat to go on after a stop, and what TensorBoard's HParams dashboard shows.
    settings = {
        "script": "TransferModel", "classes": ", ".join(class_names), "train_dir": args.train_dir,
        "validation_dir": args.validation_dir or "", "validation_split": args.validation_split or 0.0,
        "seed": args.seed, "image_size": args.image_size, "batch_size": args.batch_size, "epochs": args.epochs,
        "initial_epoch": args.initial_epoch, "backbone": BACKBONE, "weights": args.weights or "imagenet",
        "feature_epochs": FEATURE_EPOCHS, "feature_learning_rate": FEATURE_LEARNING_RATE,
        "fine_tune_from": BACKBONES[BACKBONE][1], "fine_tune_learning_rate": FINE_TUNE_LEARNING_RATE,
        "dense_dropout": DROPOUT, "optimizer": "Adam", **AUGMENTATION}
    feature_epochs = min(FEATURE_EPOCHS, args.epochs)

    with runs.lock(args.model_file):
        # A stopped run of the same command goes on from its last complete epoch, in its stage.
        checkpoint = training.Checkpoint(args.model_file, settings, args.initial_epoch, args.restart)
        if checkpoint.moved_aside:
            print(f"Starting again; the unfinished run is kept aside as {checkpoint.moved_aside}")
        keras.utils.set_random_seed(args.seed + checkpoint.epoch)

        # A new model starts from the ImageNet weights; one going on from a finished run has them in its file.
        if args.initial_epoch and not checkpoint.recorded:
            stage = 1 if args.initial_epoch < feature_epochs else 2
            model = training.load_run(args.model_file, args.initial_epoch, settings,
                                      lambda model: set_stage(model, stage), checkpoint)
            print(f"Resuming {args.model_file} after epoch {args.initial_epoch}")
        else:
            stage = 2 if checkpoint.recorded and checkpoint.trained != "classifier" else 1
            model = build_model(load_base(args.image_size, args.weights), len(class_names))
            trained = set_stage(model, stage)
        checkpoint.weights_of = model  # stage 1 trains the classifier alone: the whole model is kept
        if checkpoint.recorded:
            checkpoint.restore(trained)
            print(f"Going on from epoch {checkpoint.epoch} of an unfinished run ({checkpoint.path})")

        (train_images, train_labels, _), (validation_images, validation_labels, validation_names), run_files = (
            photos.read_training_and_validation(args.train_dir, args.validation_dir, class_names, args.image_size,
                                                args.validation_split, args.seed))
        validation_batches = training.validation_batches(validation_images, validation_labels, len(class_names),
                                                         args.batch_size)
        # A run going on logs in its own TensorBoard run, the epochs numbered on.
        checkpoint.run_dir = checkpoint.run_dir or reports.start_run(
            args.log_dir, "TransferModel", settings, class_names, train_images, train_labels, AUGMENTATION, args.seed,
            run_files)
        print(f"TensorBoard run: {checkpoint.run_dir}")
        validation_report = reports.ValidationReport(checkpoint.run_dir, None, validation_images, validation_labels,
                                                     validation_names, class_names, CONFUSION_MATRIX_EVERY)

        # Stage 1: the base's features of every image once, then the classifier alone on them.
        if stage == 1 and checkpoint.epoch < feature_epochs:
            started = time.perf_counter()
            train_features, validation_features = features_of(model, [train_images, validation_images],
                                                              args.batch_size)
            print(f"{BACKBONE}'s features of {len(train_images) + len(validation_images)} images in "
                  f"{time.perf_counter() - started:.1f} s")
            validation_report.batches = validation_features
            model.get_layer("classifier").fit(
                train_features, keras.utils.to_categorical(train_labels, len(class_names)),
                validation_data=(validation_features, keras.utils.to_categorical(validation_labels, len(class_names))),
                batch_size=args.batch_size, epochs=feature_epochs, initial_epoch=checkpoint.epoch, verbose=2,
                callbacks=[reports.TensorBoard(log_dir=checkpoint.run_dir), validation_report, checkpoint])

        # Stage 2: the last block and the classifier on augmented images, at a low learning rate.
        if args.epochs > feature_epochs:
            if stage == 1:
                set_stage(model, 2)
            validation_report.batches = validation_batches
            model.fit(
                training.training_batches(train_images, train_labels, len(class_names), args.batch_size,
                                          args.seed + checkpoint.epoch, AUGMENTATION),
                validation_data=validation_batches, epochs=args.epochs, shuffle=False, verbose=2,
                initial_epoch=max(checkpoint.epoch, feature_epochs),
                callbacks=[reports.TensorBoard(log_dir=checkpoint.run_dir), validation_report, checkpoint])

        # The model kept is the epoch of highest val_accuracy; the last is saved beside it.
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
        sys.exit(runs.readable_text(f"TransferModel.py: error: {error}"))
