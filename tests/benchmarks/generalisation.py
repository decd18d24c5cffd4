"""How well FirstModel and SecondModel do on photos no choice was made on: a measurement.

    python tests/benchmark_generalisation.py run --data sign_digits4 --model FirstModel \\
        --variant defaults --seed 1 --out generalisation.jsonl   # one run, 5 to 9 minutes
    python tests/benchmark_generalisation.py summary generalisation.jsonl

The README's "Generalisation" tables come from seeds 1, 2 and 3 of each variant, run
two at a time with --threads 1 on a 2-core machine.

Three splits, so that the held-out score is honest:

  test        the data set's validation/ folder, never looked at for any choice
  validation  a fixed 20 % of each class of train/ (the same for every run), on
              which val_loss picks epochs, lowers the learning rate or stops
  training    the rest of train/

A run trains one model with one variant of the settings (VARIANTS below: the
2018 settings, the scripts' defaults today, and one change at a time from 2018)
and one seed, using the scripts' own build_model and compile_model and the input
pipeline of image_tools, and records every epoch's loss and accuracy on all
three splits as one JSON line.
`summary` then reads how each way of picking the model would have done on the
test split, from the same runs: the last epoch, the epoch of lowest val_loss
or of highest val_accuracy, Keras' EarlyStopping replayed on the recorded
val_loss (restoring the best epoch or keeping the one it stopped at), and fewer
epochs.

Data sets: "bundled" is data/ (shapes, imbalanced), "sign_digits4" is
../shared/datasets/sign_digits4 (hand photos, 4 classes), skipped with a
message when it is not there.
"""

import argparse
import collections
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

DATA_SETS = {
    "bundled": REPO / "data",
    "sign_digits4": REPO.parent / "shared" / "datasets" / "sign_digits4",
}
VALIDATION_FRACTION = 0.2
SPLIT_SEED = 0  # the validation split is the same for every run and seed

# The settings of the 2018 scripts, which every variant below changes one thing of.
# reduce_lr is ReduceLROnPlateau's (factor, patience, min_lr) or None; sampling is
# "shuffled" (every image once an epoch), "class_weights" (the same, the loss weighted by
# largest class count / class count) or "balanced" (small classes repeated at random up
# to the largest's count).
SETTINGS_2018 = {
    "FirstModel": {"image_size": 150, "batch_size": 1, "epochs": 50, "reduce_lr": None,
                   "augmentation": {"shear_range": 0.2, "zoom_range": 0.2, "horizontal_flip": True},
                   "sampling": "shuffled"},
    "SecondModel": {"image_size": 150, "batch_size": 1, "epochs": 50, "reduce_lr": None,
                    "augmentation": {}, "sampling": "class_weights"},
}
# ImageDataGenerator settings the scripts may set, by constant name.
AUGMENTATION_CONSTANTS = ("ROTATION_RANGE", "WIDTH_SHIFT_RANGE", "HEIGHT_SHIFT_RANGE",
                          "SHEAR_RANGE", "ZOOM_RANGE", "HORIZONTAL_FLIP", "BRIGHTNESS_RANGE")

# One change at a time from the 2018 settings; "augmentation" adds to or replaces the
# model's. "defaults" is what the scripts run with today, read from their constants.
VARIANTS = {
    "2018": {},
    "defaults": None,
    "plateau": {"reduce_lr": (0.5, 5, 0.001)},
    "geometry": {"augmentation": {"rotation_range": 15, "width_shift_range": 0.1,
                                  "height_shift_range": 0.1}},
    "brightness": {"augmentation": {"brightness_range": (0.8, 1.2)}},
    "no-flip": {"augmentation": {"horizontal_flip": False}},
    "balanced": {"sampling": "balanced"},
    "size100": {"image_size": 100},
    "plateau+geometry": {"reduce_lr": (0.5, 5, 0.001),
                         "augmentation": {"rotation_range": 15, "width_shift_range": 0.1,
                                          "height_shift_range": 0.1}},
}


def run_settings(model, variant, script):
    """The settings of one run: SETTINGS_2018 with the variant's change, or the script's own."""
    if VARIANTS[variant] is None:
        return {"image_size": script.IMAGE_SIZE, "batch_size": script.BATCH_SIZE,
                "epochs": script.EPOCHS,
                "reduce_lr": (script.REDUCE_LR_FACTOR, script.REDUCE_LR_PATIENCE,
                              script.MIN_LEARNING_RATE) if script.REDUCE_LR_PATIENCE else None,
                "augmentation": {name.lower(): getattr(script, name)
                                 for name in AUGMENTATION_CONSTANTS if hasattr(script, name)},
                "sampling": SETTINGS_2018[model]["sampling"]}
    settings = dict(SETTINGS_2018[model], **VARIANTS[variant])
    settings["augmentation"] = {**SETTINGS_2018[model]["augmentation"],
                                **VARIANTS[variant].get("augmentation", {})}
    return settings


def stratified_split(train_dir, class_names):
    """(training paths, labels), (validation paths, labels): VALIDATION_FRACTION of each class."""
    import image_files

    rng = np.random.default_rng(SPLIT_SEED)
    split = {"training": ([], []), "validation": ([], [])}
    for index, class_name in enumerate(class_names):
        class_dir = os.path.join(train_dir, class_name)
        paths = [os.path.join(class_dir, name) for name in image_files.list_images(class_dir)]
        chosen = set(rng.permutation(len(paths))[:round(len(paths) * VALIDATION_FRACTION)])
        for position, path in enumerate(paths):
            role = "validation" if position in chosen else "training"
            split[role][0].append(path)
            split[role][1].append(index)
    return split["training"], split["validation"]


def read_split(paths, labels, image_size):
    import image_files

    images, readable = image_files.read_images(paths, image_size)
    return images, np.array(labels, dtype=np.int64)[readable]


def oversampled(images, labels, seed):
    """Every class repeated (with random picks) up to the largest class's count."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels)
    picks = [np.concatenate([np.flatnonzero(labels == index),
                             rng.choice(np.flatnonzero(labels == index), counts.max() - count)])
             for index, count in enumerate(counts)]
    picks = np.concatenate(picks)
    return images[picks], labels[picks]


def run(args):
    data_dir = DATA_SETS[args.data]
    if not data_dir.is_dir():
        print(f"skipped: {data_dir} is not there")
        return
    import keras_tools  # first: TensorFlow starts there, quietly

    import keras
    import tensorflow as tf

    import image_files

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    script = __import__(args.model)
    settings = run_settings(args.model, args.variant, script)
    image_size = settings["image_size"]
    epochs = args.epochs or settings["epochs"]
    class_names = image_files.class_names(str(data_dir / "train"), "training")

    (train_paths, train_labels), (validation_paths, validation_labels) = stratified_split(
        str(data_dir / "train"), class_names)
    train_images, train_labels = read_split(train_paths, train_labels, image_size)
    validation_images, validation_labels = read_split(validation_paths, validation_labels, image_size)
    test_images, test_labels, _ = image_files.read_image_folder(
        str(data_dir / "validation"), class_names, image_size, "test")

    keras.utils.set_random_seed(args.seed)
    class_weights = None
    if settings["sampling"] == "class_weights":
        counts = np.bincount(train_labels, minlength=len(class_names))
        class_weights = {index: counts.max() / count for index, count in enumerate(counts)}
    elif settings["sampling"] == "balanced":
        train_images, train_labels = oversampled(train_images, train_labels, args.seed)
    augmentation = settings["augmentation"]

    num_classes = len(class_names)
    train_batches = keras_tools.training_batches(
        train_images, train_labels, num_classes, settings["batch_size"], args.seed, augmentation)
    validation_batches = keras_tools.validation_batches(
        validation_images, validation_labels, num_classes, 32)
    test_batches = keras_tools.validation_batches(test_images, test_labels, num_classes, 32)
    model = script.build_model(image_size, num_classes)
    script.compile_model(model)

    record = collections.defaultdict(list)

    class Recorder(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            record["seconds"].append(time.perf_counter() - self.started)
            record["learning_rate"].append(float(self.model.optimizer.learning_rate))
            test_loss, test_accuracy = self.model.evaluate(test_batches, verbose=0)
            for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
                record[name].append(float(logs[name]))
            record["test_loss"].append(float(test_loss))
            record["test_accuracy"].append(float(test_accuracy))
            print(f"{args.data} {args.model} {args.variant} seed {args.seed} epoch {epoch + 1}: "
                  f"val_loss {logs['val_loss']:.4f} val_accuracy {logs['val_accuracy']:.4f} "
                  f"test_accuracy {test_accuracy:.4f} ({record['seconds'][-1]:.1f} s)", flush=True)

    callbacks = [Recorder()]
    if settings["reduce_lr"]:
        factor, patience, min_lr = settings["reduce_lr"]
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=factor, patience=patience, min_lr=min_lr))
    model.fit(train_batches, validation_data=validation_batches, epochs=epochs,
              class_weight=class_weights, shuffle=False, callbacks=callbacks, verbose=0)

    line = {"data": args.data, "model": args.model, "variant": args.variant, "seed": args.seed,
            "settings": settings, "train_images": int(len(train_labels)),
            "validation_images": int(len(validation_labels)), "test_images": int(len(test_labels)),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "threads": args.threads, **record}
    with open(args.out, "a") as out:
        out.write(json.dumps(line) + "\n")


# Ways of picking the model from a run, each from val_loss only.

def last_epoch(val_loss, epochs):
    """The model after `epochs` epochs: (epoch index, epochs trained)."""
    return epochs - 1, epochs


def best_epoch(val_loss, epochs):
    """The epoch of lowest val_loss within `epochs` epochs."""
    return int(np.argmin(val_loss[:epochs])), epochs


def best_accuracy_epoch(result, epochs):
    """The epoch of highest val_accuracy within `epochs` epochs, the lower val_loss on a tie."""
    scores = list(zip(result["val_accuracy"][:epochs], [-loss for loss in result["val_loss"][:epochs]]))
    return scores.index(max(scores)), epochs


def early_stopping(val_loss, epochs, patience):
    """Keras EarlyStopping(patience, restore_best_weights=True) within `epochs` epochs."""
    best, best_index = float("inf"), 0
    for index, loss in enumerate(val_loss[:epochs]):
        if loss < best:
            best, best_index = loss, index
        elif index - best_index >= patience:
            return best_index, index + 1
    return best_index, epochs


def stopped_epoch(val_loss, epochs, patience):
    """Keras EarlyStopping(patience) keeping the epoch it stopped at."""
    run_epochs = early_stopping(val_loss, epochs, patience)[1]
    return run_epochs - 1, run_epochs


def picks(epochs):
    """(name, pick(result) -> (epoch index, epochs trained)) of each way of picking the model."""
    yield f"last of {epochs}", lambda result: last_epoch(result["val_loss"], epochs)
    yield f"best val_loss of {epochs}", lambda result: best_epoch(result["val_loss"], epochs)
    yield f"best val_accuracy of {epochs}", lambda result: best_accuracy_epoch(result, epochs)
    for patience in (10, 15):
        yield (f"early stop {patience}, best of {epochs}",
               lambda result, patience=patience: early_stopping(result["val_loss"], epochs, patience))
        yield (f"early stop {patience}, last of {epochs}",
               lambda result, patience=patience: stopped_epoch(result["val_loss"], epochs, patience))


def mean_and_spread(values):
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def summary(args):
    runs = collections.defaultdict(list)
    with open(args.results) as results:
        for line in results:
            result = json.loads(line)
            runs[result["data"], result["model"], result["variant"]].append(result)
    print("| data | model | variant | pick | seeds | test accuracy | val accuracy "
          "| epochs | minutes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (data, model, variant), results in sorted(runs.items()):
        trained = min(len(result["val_loss"]) for result in results)
        for epochs in sorted({trained, *args.epochs} & set(range(1, trained + 1))):
            for pick_name, pick in picks(epochs):
                tests, validations, epochs_run, minutes = [], [], [], []
                for result in results:
                    index, run_epochs = pick(result)
                    tests.append(result["test_accuracy"][index])
                    validations.append(result["val_accuracy"][index])
                    epochs_run.append(run_epochs)
                    minutes.append(sum(result["seconds"][:run_epochs]) / 60)
                print(f"| {data} | {model} | {variant} | {pick_name} | {len(results)} "
                      f"| {mean_and_spread(tests)} | {mean_and_spread(validations)} "
                      f"| {statistics.mean(epochs_run):.0f} | {statistics.mean(minutes):.1f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="train one model and append its record to --out")
    run_parser.add_argument("--data", choices=DATA_SETS, required=True)
    run_parser.add_argument("--model", choices=("FirstModel", "SecondModel"), required=True)
    run_parser.add_argument("--variant", choices=VARIANTS, default="2018")
    run_parser.add_argument("--seed", type=int, required=True)
    run_parser.add_argument("--epochs", type=int, default=0, help="default: the variant's")
    run_parser.add_argument("--threads", type=int, default=0,
                            help="TensorFlow threads; 1 when two runs share 2 cores")
    run_parser.add_argument("--out", required=True, help="JSON lines file to append to")
    summary_parser = commands.add_parser("summary", help="test accuracy by variant and pick")
    summary_parser.add_argument("results")
    summary_parser.add_argument("--epochs", type=int, nargs="*", default=[25, 30, 40],
                                help="also read the runs as if they had stopped here")
    args = parser.parse_args()
    if args.command == "run":
        args.out = os.path.abspath(args.out)
        os.chdir(REPO)  # the scripts' defaults are relative to the repository
        run(args)
    else:
        summary(args)


if __name__ == "__main__":
    main()
