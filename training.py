"""The networks' side: settings checked, photos in batches augmented in memory, the run's state on disk after every
epoch, the model files (<name>.h5, the epoch kept, <name>.last.h5, the last), and photos classified by a model."""

import io
import json
import math
import os
import tempfile
import time
import warnings

import h5py
import keras
import numpy as np
import tensorflow as tf
from sklearn.model_selection import StratifiedGroupKFold
from tensorflow.keras.preprocessing.image import ImageDataGenerator

import photos
import runs
from runs import DataError

# Training images are shuffled, augmented and rescaled this many at a time, then batched.
AUGMENTATION_CHUNK = 64


def check_training_settings(epochs, initial_epoch, batch_size, image_size, augmentation, smallest_image=22):
    """augmentation: ImageDataGenerator's keyword arguments; smallest_image: the scripts' networks need 22 pixels."""
    for flag, value in (("--epochs", epochs), ("--batch-size", batch_size)):
        if value < 1:
            raise DataError(f"{flag} {value} must be 1 or more")
    if initial_epoch < 0:
        raise DataError(f"--initial-epoch {initial_epoch} must be 0 (a new model) or more")
    if epochs <= initial_epoch:
        raise DataError(f"--epochs {epochs} must be above --initial-epoch {initial_epoch}: --epochs is the epoch to "
                        "stop after, not the number of epochs to add")
    if image_size < smallest_image:
        raise DataError(f"--image-size {image_size} is too small: the network needs {smallest_image} pixels or more")
    # Named as the user wrote them, before the generator turns zca_whitening on featurewise_center.
    for setting in ("featurewise_center", "samplewise_center", "featurewise_std_normalization",
                    "samplewise_std_normalization", "zca_whitening", "channel_shift_range", "preprocessing_function",
                    "rescale"):
        if augmentation.get(setting):
            raise DataError(f"AUGMENTATION: {setting} is not applied to in-memory images: remove it")
    try:
        generator = ImageDataGenerator(**augmentation)
    except (TypeError, ValueError) as error:
        raise DataError(f"AUGMENTATION {augmentation}: {error}") from None
    for setting in ("width_shift_range", "height_shift_range"):
        if not 0 <= getattr(generator, setting) < 1:
            raise DataError(f"AUGMENTATION: {setting} must be a fraction of the image size, from 0 to 1")


def label_check_folds(train_dir, image_size, seed, folds):
    """--check-labels' reading: (images, labels, paths, class names, [(trained on, held out)] of stratified folds)."""
    class_names, _ = photos.check_image_folder(train_dir, "training")
    images, labels, paths = photos.read_image_folder(train_dir, class_names, image_size, "training")
    # Each group of near-duplicates in one fold: a copy in another would vouch for a wrong label the group shares.
    groups = photos.near_duplicate_groups(photos.perceptual_hashes(images))
    folds = min(folds, *(len(set(groups[labels == index])) for index in range(len(class_names))))
    if folds < 2:
        raise DataError(f"'{train_dir}' has a class of 1 readable image, or of near-duplicates only: --check-labels "
                        "needs at least 2 photos that differ per class")
    return images, labels, paths, class_names, list(StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(
        images, labels, groups))


# Batches: the images stay in memory as uint8; augmentation runs on them inside tf.data.

def network_input(images):
    """uint8 images as the networks take them: floats in [0, 1], as rescale=1/255 did."""
    return tf.cast(images, tf.float32) / 255.0


def validation_batches(images, labels, num_classes, batch_size):
    """Batches in a fixed order, so that every epoch's val_loss is measured on the same images."""
    return tf.data.Dataset.from_tensor_slices((images, tf.one_hot(labels, num_classes))).batch(batch_size).map(
        lambda x, y: (network_input(x), y)).prefetch(tf.data.AUTOTUNE)


def training_batches(images, labels, num_classes, batch_size, seed, augmentation=None):
    """Shuffled batches, each image once an epoch, augmented a chunk at a time: twice as fast as flow()."""
    # Only indices are shuffled: a shuffle buffer would hold a second copy of the images.
    images, labels = tf.constant(images), tf.one_hot(labels, num_classes)
    chunks = tf.data.Dataset.range(len(images)).shuffle(len(images), seed=seed).batch(AUGMENTATION_CHUNK).map(
        lambda batch: (tf.gather(images, batch), tf.gather(labels, batch)))
    if augmentation:
        generator = ImageDataGenerator(**augmentation)
        # One random seed per chunk makes the transforms repeatable with --seed.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        chunks = tf.data.Dataset.zip(chunks, seeds).map(
            lambda chunk, chunk_seed: (augment(chunk[0], generator, chunk_seed), chunk[1]),
            num_parallel_calls=tf.data.AUTOTUNE)
    batches = chunks.map(lambda x, y: (network_input(x), y)).unbatch().batch(batch_size)
    # unbatch() forgets how many batches there are; Keras needs it to end epochs quietly.
    batches = batches.apply(tf.data.experimental.assert_cardinality(math.ceil(len(images) / batch_size)))
    return batches.prefetch(tf.data.AUTOTUNE)


def affine_transforms(size, theta, shift_x, shift_y, shear, zoom_x, zoom_y):
    """ImageDataGenerator's affine matrices (rotation, shift, shear, zoom about the centre), one per image."""
    theta, shear, centre = theta * (math.pi / 180), shear * (math.pi / 180), size / 2 - 0.5
    cos, sin = tf.cos(theta), tf.sin(theta)
    a00, a01 = cos * zoom_x, -tf.sin(theta + shear) * zoom_y
    a10, a11 = sin * zoom_x, tf.cos(theta + shear) * zoom_y
    b0 = centre * (1 - a00 - a01) + cos * shift_x - sin * shift_y
    b1 = centre * (1 - a10 - a11) + sin * shift_x + cos * shift_y
    zeros = tf.zeros_like(theta)
    return tf.stack([a00, a01, b0, a10, a11, b1, zeros, zeros], axis=1)


def augment(images, generator, seed):
    """ImageDataGenerator.random_transform of a batch of square images at once: its ranges, matrix and fill mode,
    bilinear; brightness_range multiplies (no contrast stretch). Float32, 0-255."""
    count, size = tf.shape(images)[0], images.shape[1]
    seeds = iter(tf.unstack(tf.random.experimental.stateless_split(seed, num=8)))

    def uniform(low, high):
        return tf.random.stateless_uniform([count], next(seeds), minval=low, maxval=high)

    # The draws of ImageDataGenerator.get_random_transform; its "height" shift moves along x.
    transforms = affine_transforms(size, theta=uniform(-generator.rotation_range, generator.rotation_range),
                                   shift_x=uniform(-generator.height_shift_range, generator.height_shift_range) * size,
                                   shift_y=uniform(-generator.width_shift_range, generator.width_shift_range) * size,
                                   shear=uniform(-generator.shear_range, generator.shear_range),
                                   zoom_x=uniform(*generator.zoom_range), zoom_y=uniform(*generator.zoom_range))
    transformed = keras.ops.image.affine_transform(
        tf.cast(images, tf.float32), transforms, interpolation="bilinear",
        fill_mode=generator.fill_mode, fill_value=generator.cval)
    for enabled, axis in ((generator.horizontal_flip, 2), (generator.vertical_flip, 1)):
        if enabled:
            flip = uniform(0.0, 1.0) < 0.5
            transformed = tf.where(flip[:, None, None, None], tf.reverse(transformed, [axis]), transformed)
    if generator.brightness_range is not None:
        brightness = uniform(*generator.brightness_range)
        transformed = tf.clip_by_value(transformed * brightness[:, None, None, None], 0, 255)
    return transformed


# The run's state after every epoch: the last epoch and the one kept.

def better(logs, kept_metrics):
    """Whether an epoch beats the one kept: a higher val_accuracy, the lower val_loss on a tie; a NaN never."""
    kept = kept_metrics or {}
    return math.isfinite(logs["val_loss"]) and (not math.isfinite(kept.get("val_loss", math.nan)) or (
        logs["val_accuracy"], -logs["val_loss"]) > (kept["val_accuracy"], -kept["val_loss"]))


def differences(then, now, names=None):
    """The settings (names, or all) that differ, as "name <then> then, <now> now; ..."; now as read back from JSON."""
    now = json.loads(json.dumps(now))
    return "; ".join(f"{name} {then.get(name)!r} then, {now.get(name)!r} now"
                     for name in sorted(names or then.keys() | now.keys()) if then.get(name) != now.get(name))


class Checkpoint(keras.callbacks.Callback):
    """A run's state after each complete epoch, in <name>.checkpoint.h5, which the same command goes on from."""
    # Keras' BackupAndRestore writes the weights and the epoch in two files, in place: a kill between or during them
    # resumes the wrong epoch, or fails. ModelCheckpoint(save_best_only=True) compares one metric, in place too.

    def __init__(self, model_file, settings, initial_epoch, restart, weights_of=None):
        super().__init__()
        self.path = f"{os.path.splitext(model_file)[0]}.checkpoint.h5"
        self.settings = settings
        self.epoch, self.last_metrics, self.weights_of = initial_epoch, {}, weights_of
        self.kept_epoch = self.kept_metrics = self.kept_weights = self.moved_aside = self.recorded = None
        if os.path.exists(self.path) and restart:
            self.moved_aside = self.path.replace(".checkpoint.", time.strftime(".checkpoint-%Y%m%d-%H%M%S."))
            os.replace(self.path, self.moved_aside)
        elif os.path.exists(self.path):
            try:
                with h5py.File(self.path, "r") as saved:
                    self.recorded = json.loads(saved.attrs["run"])
            except Exception as error:  # h5py and json raise many kinds on a file they did not write
                raise DataError(f"cannot read the unfinished run in '{self.path}' ({type(error).__name__}): move it "
                                "away, or add --restart to start again") from None
            made_by = self.recorded["settings"].get("script")
            if made_by != settings["script"]:
                raise DataError(f"'{self.path}' holds an unfinished run of {made_by}.py: go on with python "
                                f"{made_by}.py and the command it was started with, or add --restart to start again "
                                "(the unfinished run is then kept aside)")
            differing = differences(self.recorded["settings"], self.settings)
            if differing:
                raise DataError(f"'{self.path}' holds an unfinished run started with other settings ({differing}): "
                                "run the command it was started with to go on, or add --restart to start again (the "
                                "unfinished run is then kept aside)")
        self.run_dir, self.trained = (self.recorded or {}).get("run_dir"), (self.recorded or {}).get("trained")
        self._tell_stops()

    def restore(self, model):
        """Go on: model (the model fit trained, compiled) gets its weights and optimizer state back."""
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        try:
            with h5py.File(self.path, "r") as saved:
                model.set_weights([saved[f"weights/{index}"][()] for index in range(len(saved["weights"]))])
                for index, variable in enumerate(model.optimizer.variables):
                    variable.assign(saved[f"optimizer/{index}"][()])
                kept = (self.weights_of or model).get_weights()
                for index, weights in saved.get("kept", {}).items():
                    kept[int(index)] = weights[()]
        except Exception as error:  # Keras and h5py raise many kinds on a file of another model
            raise DataError(f"cannot go on from '{self.path}' ({type(error).__name__}: {error}): add --restart to "
                            "start again") from None
        self.epoch, self.last_metrics = self.recorded["epoch"], self.recorded["last_metrics"]
        if self.recorded["kept_epoch"]:
            self.kept_epoch, self.kept_metrics, self.kept_weights = (
                self.recorded["kept_epoch"], self.recorded["kept_metrics"], kept)
        self._tell_stops()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch, self.last_metrics = epoch + 1, {name: float(value) for name, value in logs.items()}
        if better(logs, self.kept_metrics):
            self.kept_epoch, self.kept_metrics = epoch + 1, self.last_metrics
            self.kept_weights = (self.weights_of or self.model).get_weights()
        runs.write_whole({self.path: self._save})
        self._tell_stops()

    def _save(self, path):
        # Arrays, not Keras' save_weights, which walks every layer: 233 ms for TransferModel's stage 2, against 63 ms;
        # in memory, then written by Python, so that a full disk is an OSError saying so.
        trained, in_memory = {id(variable) for variable in self.model.weights}, io.BytesIO()
        with h5py.File(in_memory, "w") as saved:
            for group, arrays in (("weights", self.model.get_weights()), ("optimizer", self.model.optimizer.variables)):
                for index, array in enumerate(arrays):
                    saved.create_dataset(f"{group}/{index}", data=np.asarray(array))
            # The kept weights that differ, of the part fit trains: TransferModel's stage 1 would write its frozen base.
            kept = zip((self.weights_of or self.model).weights, self.kept_weights or [])
            for index, (variable, weights) in enumerate(kept):
                if id(variable) in trained and not np.array_equal(weights, variable.numpy()):
                    saved.create_dataset(f"kept/{index}", data=weights)
            saved.attrs["run"] = json.dumps({
                "settings": self.settings, "epoch": self.epoch, "last_metrics": self.last_metrics,
                "kept_epoch": self.kept_epoch, "kept_metrics": self.kept_metrics, "run_dir": self.run_dir,
                "trained": self.model.name})
        with open(path, "wb") as written:
            written.write(in_memory.getbuffer())

    def _tell_stops(self):
        if os.path.exists(self.path):
            runs.on_stop(f"the run is saved after epoch {self.epoch} in {self.path}: the same command " + (
                f"goes on at epoch {self.epoch + 1}" if self.epoch < self.settings["epochs"] else "saves its model"))
        elif self.epoch:
            runs.on_stop(f"nothing new saved: the same command starts again at epoch {self.epoch + 1}")

    def kept_and_last(self, last_weights):
        """((epoch, metrics, weights) of the model kept, those of the last): the last twice if none was kept."""
        last = (self.epoch, self.last_metrics, last_weights)
        return (last if self.kept_weights is None else (self.kept_epoch, self.kept_metrics, self.kept_weights)), last

    def remove(self):
        os.unlink(self.path)  # a save cut short left its hidden file for the next save to replace


def save_model_files(model, model_file, class_names, kept, last, settings):
    """The epoch kept as model_file, the last as <name>.last.h5, weights beside each, written whole."""
    def saver(path, epoch, metrics, weights):
        def save(written_as):
            model.set_weights(weights)
            if path.endswith(".weights.h5"):
                return model.save_weights(written_as)
            model.save(written_as)
            with h5py.File(written_as, "a") as saved:
                saved.attrs.update(class_names=json.dumps(class_names), epoch=epoch, metrics=json.dumps(metrics),
                                   settings=json.dumps(settings))
        return save

    stem = os.path.splitext(model_file)[0]
    files = {model_file: kept, f"{stem}.weights.h5": kept, f"{stem}.last.h5": last, f"{stem}.last.weights.h5": last}
    try:
        runs.write_whole({path: saver(path, *state) for path, state in files.items()})
    finally:
        model.set_weights(last[2])
    return list(files)


def load_model(model_file, script=None):
    """The model in model_file, not compiled, and its class names; with script, refused if another script made it."""
    if model_file.endswith((".tflite", ".joblib")):
        raise DataError(f"'{model_file}' is not a Keras model: name the .h5 that {script or 'the script'}.py saved")
    try:
        model = keras.models.load_model(model_file, compile=False)
        with h5py.File(model_file, "r") as saved:
            class_names, settings = json.loads(saved.attrs["class_names"]), json.loads(saved.attrs["settings"])
    except Exception as error:  # h5py and Keras raise many kinds on a file that is not a model
        raise DataError(f"cannot load the model in '{model_file}' ({type(error).__name__}: {error}): it was not "
                        "saved by these scripts; name another with --model-file") from None
    if script and settings.get("script") != script:
        raise DataError(f"'{model_file}' was made by {settings.get('script')}.py, not {script}.py: run "
                        f"{settings.get('script')}.py with it")
    return model, class_names


def load_run(model_file, initial_epoch, settings, compile_model, checkpoint):
    """The last epoch of a finished run (--initial-epoch), compiled by compile_model, with its optimizer's state."""
    last_file = f"{os.path.splitext(model_file)[0]}.last.h5"
    if not os.path.isfile(last_file):
        raise DataError(f"cannot resume: model file '{last_file}' does not exist; train from the start "
                        "(--initial-epoch 0) or name the saved model with --model-file")
    with h5py.File(last_file, "r") as saved:
        recorded, then = saved.attrs.get("epoch"), json.loads(saved.attrs.get("settings", "{}"))
    if recorded != initial_epoch:
        raise DataError(f"cannot resume '{model_file}' after epoch {initial_epoch}: '{last_file}' holds the model "
                        f"after epoch {recorded}; use --initial-epoch {recorded}")
    if then.get("script") != settings["script"]:
        raise DataError(f"cannot resume '{last_file}': it was made by {then.get('script')}.py, not "
                        f"{settings['script']}.py; resume it with python {then.get('script')}.py, or name another "
                        "with --model-file")
    # Other hyperparameters may go on; not other classes or images, another split.
    kept = ("classes", "image_size", "validation_split") + ("seed",) * bool(settings["validation_split"])
    differing = differences(then, settings, kept)
    if differing:
        raise DataError(f"cannot resume '{last_file}': it was trained with other settings ({differing}); resume it "
                        "with its own, or name another with --model-file")
    model, _ = load_model(last_file)
    trained = compile_model(model) or model  # the model fit trains: in TransferModel's stage 1, its classifier
    if not trained.optimizer.built:
        trained.optimizer.build(trained.trainable_variables)
    model.load_weights(f"{os.path.splitext(model_file)[0]}.weights.h5")
    checkpoint.kept_weights = model.get_weights()
    model.load_weights(f"{os.path.splitext(last_file)[0]}.weights.h5")  # weights files hold the optimizer state too
    with h5py.File(model_file, "r") as saved:
        checkpoint.kept_epoch, checkpoint.kept_metrics = int(saved.attrs["epoch"]), json.loads(saved.attrs["metrics"])
    return model


def probabilities(model, images):
    """Called 64 at a time: predict() would trace a new function for each new model, and TensorFlow warns of it."""
    return np.concatenate([model(network_input(images[start:start + 64])) for start in range(0, len(images), 64)])


def predict(model_file, path):
    """(paths, predicted classes, their probabilities) of the images at path, by model_file (.h5 or .tflite)."""
    paths = photos.list_images_to_predict(path)
    if not os.path.isfile(model_file):
        raise DataError(f"no model '{model_file}': train one first, or name one with --model-file")
    if model_file.endswith(".tflite"):
        interpreter, class_names = litert_model(model_file, runs.cores())
        images, readable = photos.read_images(paths, interpreter.get_input_details()[0]["shape"][1])
    else:
        model, class_names = load_model(model_file)
        images, readable = photos.read_images(paths, model.input_shape[1])
    if not readable.any():
        raise DataError("none of the images to predict can be read: see the warnings above")
    if model_file.endswith(".tflite"):
        probabilities = litert_probabilities(interpreter, images)[0]
    else:
        probabilities = model.predict(network_input(images), batch_size=32, verbose=0)
    predicted = [class_names[index] for index in probabilities.argmax(axis=1)]
    return [path for path, ok in zip(paths, readable) if ok], predicted, probabilities.max(axis=1)


# LiteRT (TFLite) files for apps: uint8 pixels in, probabilities out, every step between inside the file.

def litert_files(model_file):
    """The float file, the int8 file, the class names and the parity report that --export writes beside model_file."""
    stem = os.path.splitext(model_file)[0]
    return f"{stem}.tflite", f"{stem}.int8.tflite", f"{stem}.labels.txt", f"{stem}.export.txt"


def check_model_file_use(model_file, predicting):
    if model_file.endswith(".tflite") and not predicting:
        raise DataError(f"'{model_file}' is a LiteRT file, which only --predict uses: training, --initial-epoch, "
                        "--check-labels and --export take the .h5 it was exported from")


def litert_converted(model, calibration_images):
    """(float32 file, int8 file) of model as bytes: both take [1, H, W, 3] uint8 pixels and give float32
    probabilities; the int8 file's ranges are calibrated on calibration_images (uint8)."""
    size = model.input_shape[1]
    archive = keras.export.ExportArchive()
    archive.track(model)
    # The float file casts the pixels; the int8 file takes them as its quantized input, of scale 1 and zero point 0.
    archive.add_endpoint(name="uint8_pixels", fn=lambda pixels: model(network_input(pixels), training=False),
                         input_signature=[tf.TensorSpec((1, size, size, 3), tf.uint8, name="pixels")])
    archive.add_endpoint(name="float_pixels", fn=lambda pixels: model(pixels / 255.0, training=False),
                         input_signature=[tf.TensorSpec((1, size, size, 3), tf.float32, name="pixels")])

    def calibration():
        # One black-and-white frame first: the input's range is then 0 to 255 exactly, so pixels go in as they are.
        frame = np.zeros((1, size, size, 3), dtype=np.float32)
        frame[:, :, size // 2:] = 255
        yield [frame]
        for image in calibration_images:
            yield [image[None].astype(np.float32)]

    # Through a SavedModel: TFLiteConverter.from_keras_model fails on many Keras 3 models (tensorflow#63867).
    with tempfile.TemporaryDirectory() as saved_model, runs.start_up_lines_hidden(kept=lambda log: ""):
        archive.write_out(saved_model, verbose=False)
        float_file = tf.lite.TFLiteConverter.from_saved_model(saved_model, ["uint8_pixels"]).convert()
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, ["float_pixels"])
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type, converter.inference_output_type = tf.uint8, tf.float32
        return float_file, converter.convert()


XNNPACK_LINE = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"  # LiteRT says it for every interpreter


def litert_interpreter(model_path=None, model_content=None, threads=1):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # no ai-edge-litert wheel (Intel Macs): TensorFlow's own interpreter runs the same files
        Interpreter = tf.lite.Interpreter
    with runs.start_up_lines_hidden(kept=lambda log: log.replace(XNNPACK_LINE, "")), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TensorFlow's interpreter warns that it is deprecated, for LiteRT's
        interpreter = Interpreter(model_path=model_path, model_content=model_content, num_threads=threads)
        interpreter.allocate_tensors()
    return interpreter


def litert_model(model_file, threads):
    """(interpreter, class names) of an exported file and the labels.txt beside it; one line if either is wrong."""
    labels_file = f"{model_file.removesuffix('.tflite').removesuffix('.int8')}.labels.txt"
    try:
        interpreter = litert_interpreter(model_file, threads=threads)
        (pixels,), (output,) = interpreter.get_input_details(), interpreter.get_output_details()
    except Exception as error:  # ValueError on a file that is not a model, RuntimeError on one cut short
        raise DataError(f"cannot load '{model_file}' ({runs.first_line(error)}): it is not a whole LiteRT model; "
                        "export it again with --export") from None
    if pixels["dtype"] != np.uint8 or len(pixels["shape"]) != 4 or output["dtype"] != np.float32:
        raise DataError(f"'{model_file}' takes {pixels['dtype'].__name__} {list(pixels['shape'])}, not uint8 pixels "
                        "[1, H, W, 3]: it was not exported by these scripts; export it with --export")
    try:
        with open(labels_file, encoding="utf-8") as labels:
            class_names = labels.read().splitlines()
    except OSError as error:
        raise DataError(f"cannot read '{labels_file}', the class names of '{model_file}' ({runs.why_not_written(error)}"
                        "): export it again with --export") from None
    if len(class_names) != output["shape"][-1]:
        raise DataError(f"'{labels_file}' names {len(class_names)} classes, but '{model_file}' gives "
                        f"{output['shape'][-1]} probabilities: export it again with --export")
    return interpreter, class_names


def one_at_a_time(classify, images):
    """(probabilities, median seconds per photo) of uint8 images given to classify one at a time, as an app gives
    them: classify takes a [1, H, W, 3] batch and returns its probabilities."""
    probabilities, seconds = [], []
    for image in images:
        started = time.perf_counter()
        probabilities.append(classify(image[None]))
        seconds.append(time.perf_counter() - started)
    return np.array(probabilities), float(np.median(seconds))


def litert_probabilities(interpreter, images):
    """(probabilities, median seconds per photo) of uint8 images by a LiteRT interpreter, one at a time."""
    (pixels,), (output,) = interpreter.get_input_details(), interpreter.get_output_details()

    def classify(batch):
        interpreter.set_tensor(pixels["index"], batch)
        interpreter.invoke()
        return interpreter.get_tensor(output["index"])[0].copy()

    return one_at_a_time(classify, images)


def export_litert(model_file, script, train_dir, validation_dir, fraction, seed, calibration_photos):
    """--export: model_file as LiteRT files beside it, compared with the Keras model on the validation photos, and
    written whole. (Paths written, the parity report, a warning or None)."""
    if not os.path.isfile(model_file):
        raise DataError(f"no model '{model_file}': train one first, or name one with --model-file")
    model, class_names = load_model(model_file, script)
    paths = litert_files(model_file)
    for path in paths:
        runs.check_output_file(path, os.path.splitext(path)[1])
    folder_classes = photos.check_image_folders(train_dir, validation_dir, fraction)[0]
    if folder_classes != class_names:
        raise DataError(f"'{model_file}' classifies {class_names}, but '{train_dir}' holds {folder_classes}: export "
                        "with the folders it was trained on (--train-dir, --validation-dir)")
    (train_images, _, _), (images, labels, _), _ = photos.read_training_and_validation(
        train_dir, validation_dir, class_names, model.input_shape[1], fraction, seed)
    calibration_images = np.random.default_rng(seed).permutation(train_images)[:calibration_photos]
    try:
        files = dict(zip(paths, litert_converted(model, calibration_images)))
    except Exception as error:  # TensorFlow's converter raises many kinds
        raise DataError(f"cannot convert '{model_file}' to LiteRT ({type(error).__name__}: "
                        f"{runs.first_line(error)[:200]})") from None

    # Every file against the Keras model, on the same uint8 photos, one at a time as an app classifies them.
    cores = runs.cores()
    keras_probabilities, keras_seconds = one_at_a_time(
        lambda batch: model.predict_on_batch(network_input(batch))[0], images)
    accuracies = {model_file: np.mean(keras_probabilities.argmax(1) == labels)}
    # (file, agreement, largest difference, bytes, ms with 1 thread, with every core); TensorFlow's threads are set
    # once, as it starts: every core.
    rows = [(model_file, "-", "-", os.path.getsize(model_file), "-", f"{keras_seconds * 1000:.2f}")]
    for path, content in files.items():
        probabilities, one = litert_probabilities(litert_interpreter(model_content=content), images)
        every = litert_probabilities(litert_interpreter(model_content=content, threads=cores), images)[1]
        accuracies[path] = np.mean(probabilities.argmax(1) == labels)
        rows.append((path, f"{np.mean(probabilities.argmax(1) == keras_probabilities.argmax(1)):.1%}",
                     f"{np.abs(probabilities - keras_probabilities).max():.6f}", len(content), f"{one * 1000:.2f}",
                     f"{every * 1000:.2f}"))
    lines = [f"{os.path.basename(model_file)} exported for apps: uint8 RGB pixels [1, {model.input_shape[1]}, "
             f"{model.input_shape[1]}, 3] in, probabilities out. On {len(images)} validation photos, one at a time:",
             f"{'file':<27}{'accuracy':>9}{'agreement':>10}{'max difference':>15}{'MB':>6}{'ms 1 thread':>12}"
             f"{f'ms {cores} threads':>13}"] + [
        f"{os.path.basename(path):<27}{accuracies[path]:>9.4f}{agreement:>10}{difference:>15}{size / 1e6:>6.1f}"
        f"{one:>12}{every:>13}" for path, agreement, difference, size, one, every in rows]
    warning = None
    if accuracies[paths[1]] < accuracies[model_file] - 0.01:
        warning = (f"the int8 file classifies {accuracies[paths[1]]:.1%} of the validation photos right, against "
                   f"{accuracies[model_file]:.1%} for the Keras model: calibrate it on more training photos "
                   "(CALIBRATION_PHOTOS), or ship the float file")
    report = "\n".join(lines) + "\n"
    files[paths[2]] = "".join(f"{name}\n" for name in class_names).encode()
    files[paths[3]] = (report + (f"warning: {warning}\n" if warning else "")).encode()
    runs.write_whole({path: lambda written_as, content=content: _write_bytes(written_as, content)
                      for path, content in files.items()})
    return list(files), report, warning


def _write_bytes(path, content):
    with open(path, "wb") as written:
        written.write(content)
