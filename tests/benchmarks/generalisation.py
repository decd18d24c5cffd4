"""Held-out accuracy of FirstModel, SecondModel and SVMModel under candidate settings: a measurement.

    python tests/benchmarks/generalisation.py run --data flowers4 --model FirstModel \\
        --variant defaults --seed 1 --out runs.jsonl        # one run: a JSON line
    python tests/benchmarks/generalisation.py summary runs.jsonl   # Markdown tables
    python tests/benchmarks/generalisation.py readme runs.jsonl    # the README's table

docs/generalisation.md says how it was run and what came out. Three splits per data set:

  test      the set's validation/ folder, never looked at for any choice
  choice    a fixed 20 % of each class of train/ (the same for every run), on which
            val_loss and val_accuracy are measured: epochs are picked there
  training  the rest of train/

Data sets: sign_digits4 and flowers4 in ../shared/datasets (skipped with a message when
absent), bundled = data/. A CNN run trains the script's own build_model with the
script's own batches (training.py), its settings those of the script ("defaults") or
of VARIANTS below, and records, every epoch, the accuracy on the choice and test splits
of the weights as trained and of their exponential moving average (Keras' use_ema, which
does not change training), each alone and averaged with the mirror image's prediction. An SVM run trains SVMModel's pipeline with its grid
search on the training split, with the features of its variant.
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
    "sign_digits4": REPO.parent / "shared" / "datasets" / "sign_digits4",
    "flowers4": REPO.parent / "shared" / "datasets" / "flowers4",
    "bundled": REPO / "data",
}
CHOICE_FRACTION = 0.2
SPLIT_SEED = 0  # the choice split is the same for every run and seed
EMA_MOMENTUM = 0.999  # Keras optimizers' use_ema: about the last 1,000 steps, 3 to 4 epochs at batch 1

# What the 2018 scripts did, in today's pipeline (every image once an epoch, read once,
# antialiased): the settings every variant starts from.
SETTINGS_2018 = {
    "FirstModel": {"image_size": 150, "batch_size": 1, "epochs": 50, "learning_rate": 1.0,
                   "augmentation": {"shear_range": 0.2, "zoom_range": 0.2, "horizontal_flip": True},
                   "class_weights": False, "label_smoothing": 0.0, "mixup": 0.0},
    "SecondModel": {"image_size": 150, "batch_size": 1, "epochs": 50, "learning_rate": 1.0,
                    "augmentation": {}, "class_weights": True, "label_smoothing": 0.0, "mixup": 0.0},
}
# Changes to the 2018 settings ("augmentation" is added to the model's); "defaults" are the
# scripts' constants today. SVM variants change SVMModel's feature constants.
VARIANTS = {
    "2018": {},
    "defaults": None,
    "geometry": {"augmentation": {"rotation_range": 15, "width_shift_range": 0.1, "height_shift_range": 0.1}},
    "geometry+brightness": {"augmentation": {"rotation_range": 15, "width_shift_range": 0.1,
                                             "height_shift_range": 0.1, "brightness_range": (0.7, 1.3)}},
    "brightness": {"augmentation": {"brightness_range": (0.7, 1.3)}},
    "smoothing": {"label_smoothing": 0.1},
    "mixup": {"mixup": 0.2},
    "geometry+mixup": {"augmentation": {"rotation_range": 15, "width_shift_range": 0.1,
                                        "height_shift_range": 0.1}, "mixup": 0.2},
    "batch16": {"batch_size": 16},
}
SVM_VARIANTS = {
    "defaults": {},
    "no-grid": {"colour_grid": 1},
    "hog8": {"hog_cell": 8},
    "size128": {"image_size": 128, "hog_cell": 32},
}


def stratified_split(train_dir, class_names):
    """(training paths, labels), (choice paths, labels): CHOICE_FRACTION of each class."""
    import photos

    rng = np.random.default_rng(SPLIT_SEED)
    split = {"training": ([], []), "choice": ([], [])}
    for index, class_name in enumerate(class_names):
        class_dir = os.path.join(train_dir, class_name)
        paths = [os.path.join(class_dir, name) for name in photos.list_images(class_dir)]
        chosen = set(rng.permutation(len(paths))[:round(len(paths) * CHOICE_FRACTION)])
        for position, path in enumerate(paths):
            role = "choice" if position in chosen else "training"
            split[role][0].append(path)
            split[role][1].append(index)
    return split["training"], split["choice"]


def read_splits(data_dir, image_size):
    """{split: (uint8 images, labels)} and the class names."""
    import photos

    class_names = photos.class_folder_names(str(data_dir / "train"), "training")
    splits = {}
    for role, (paths, labels) in zip(("training", "choice"),
                                     stratified_split(str(data_dir / "train"), class_names)):
        images, readable = photos.read_images(paths, image_size)
        splits[role] = images, np.array(labels, dtype=np.int64)[readable]
    test_images, test_labels, _ = photos.read_image_folder(
        str(data_dir / "validation"), class_names, image_size, "test")
    splits["test"] = test_images, test_labels
    return splits, class_names


def cnn_settings(model, variant, script):
    if VARIANTS[variant] is None:
        return {"image_size": script.IMAGE_SIZE, "batch_size": script.BATCH_SIZE, "epochs": script.EPOCHS,
                "learning_rate": script.LEARNING_RATE, "augmentation": script.AUGMENTATION,
                "class_weights": model == "SecondModel",
                "label_smoothing": getattr(script, "LABEL_SMOOTHING", 0.0),
                "mixup": getattr(script, "MIXUP", 0.0)}
    settings = dict(SETTINGS_2018[model], **VARIANTS[variant])
    settings["augmentation"] = {**SETTINGS_2018[model]["augmentation"],
                                **VARIANTS[variant].get("augmentation", {})}
    return settings


def run_cnn(args, data_dir):
    import runs

    runs.start("generalisation.py")  # first: TensorFlow starts quietly

    import keras
    import tensorflow as tf

    import training

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    script = __import__(args.model)
    settings = cnn_settings(args.model, args.variant, script)
    settings["epochs"] = args.epochs or settings["epochs"]
    splits, class_names = read_splits(data_dir, settings["image_size"])
    (train_images, train_labels) = splits["training"]
    num_classes = len(class_names)
    keras.utils.set_random_seed(args.seed)

    train_batches = training.training_batches(train_images, train_labels, num_classes,
                                                 settings["batch_size"], args.seed, settings["augmentation"])
    if settings["mixup"]:
        # Each batch mixed with another, shuffled independently, by a Beta(a, a) share.
        others = training.training_batches(train_images, train_labels, num_classes,
                                              settings["batch_size"], args.seed + 1, settings["augmentation"])
        alpha = settings["mixup"]

        def mix(first, second):
            gamma_1 = tf.random.gamma([], alpha)
            share = gamma_1 / (gamma_1 + tf.random.gamma([], alpha))
            size = tf.minimum(tf.shape(first[0])[0], tf.shape(second[0])[0])
            return (share * first[0][:size] + (1 - share) * second[0][:size],
                    share * first[1][:size] + (1 - share) * second[1][:size])
        train_batches = tf.data.Dataset.zip(train_batches, others).map(mix)
    choice_batches = training.validation_batches(*splits["choice"], num_classes, 32)
    model = script.build_model(settings["image_size"], num_classes)
    model.compile(optimizer=keras.optimizers.Adadelta(learning_rate=settings["learning_rate"], use_ema=True,
                                                      ema_momentum=EMA_MOMENTUM),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=settings["label_smoothing"]),
                  metrics=["accuracy"])
    class_weights = None
    if settings["class_weights"]:
        counts = np.bincount(train_labels, minlength=num_classes)
        class_weights = {index: counts.max() / count for index, count in enumerate(counts)}

    # Both splits and their mirror images, predicted in one call per set of weights.
    roles = ("choice", "test")
    inputs = tf.concat([training.network_input(splits[role][0]) for role in roles], axis=0)
    inputs = tf.concat([inputs, inputs[:, :, ::-1]], axis=0)
    ends = np.cumsum([0] + [len(splits[role][1]) for role in roles])
    record = collections.defaultdict(dict, {name: [] for name in (
        "seconds", "loss", "accuracy", "val_loss", "val_accuracy", "test_accuracy")})

    class Recorder(keras.callbacks.Callback):
        """Every epoch's test accuracy, and each way of predicting at a few epochs."""

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def accuracies(self, label, epoch):
            predictions = self.model.predict(inputs, batch_size=64, verbose=0)
            plain, mirrored = predictions[:ends[-1]], predictions[ends[-1]:]
            for role, start, end in zip(roles, ends[:-1], ends[1:]):
                labels = splits[role][1]
                record[f"{role}_{label}"][epoch] = float(np.mean(plain[start:end].argmax(1) == labels))
                record[f"{role}_{label}_mirror"][epoch] = float(
                    np.mean((plain[start:end] + mirrored[start:end]).argmax(1) == labels))

        def on_epoch_end(self, epoch, logs=None):
            record["seconds"].append(time.perf_counter() - self.started)
            for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
                record[name].append(float(logs[name]))
            test_images = inputs[ends[1]:ends[2]]
            record["test_accuracy"].append(float(np.mean(
                self.model.predict(test_images, batch_size=64, verbose=0).argmax(1) == splits["test"][1])))
            # Every way of predicting, at a few epochs only: evaluation costs as much as training.
            if (epoch + 1) in (20, 30, 40) or epoch + 1 == settings["epochs"]:
                at = str(epoch + 1)
                self.accuracies("raw", at)
                trained = self.model.get_weights()
                averages = self.model.optimizer._model_variables_moving_average  # use_ema's
                self.model.set_weights([average.numpy() for average in averages])
                self.accuracies("ema", at)
                self.model.set_weights(trained)
            print(f"{args.data} {args.model} {args.variant} seed {args.seed} epoch {epoch + 1}: "
                  f"val_accuracy {logs['val_accuracy']:.3f} test {record['test_accuracy'][-1]:.3f} "
                  f"({record['seconds'][-1]:.1f} s)", flush=True)

    model.fit(train_batches, validation_data=choice_batches, epochs=settings["epochs"],
              class_weight=class_weights, shuffle=False, callbacks=[Recorder()], verbose=0)
    return settings, record


def run_svm(args, data_dir):
    import SVMModel  # TensorFlow starts quietly in its runs.start()
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import SVC

    settings = {**SVMModel.FEATURES, **SVM_VARIANTS[args.variant]}
    splits, class_names = read_splits(data_dir, settings["image_size"])
    started = time.perf_counter()
    kinds = {role: SVMModel.features(images, settings) for role, (images, _) in splits.items()}
    features = {role: np.hstack(list(values.values())) for role, values in kinds.items()}
    train_labels = splits["training"][1]
    folds = StratifiedKFold(n_splits=SVMModel.CV_FOLDS, shuffle=True, random_state=args.seed)
    pipeline = make_pipeline(SVMModel.feature_columns(kinds["training"]),
                             SVC(kernel="rbf", class_weight=SVMModel.CLASS_WEIGHT))
    search = GridSearchCV(pipeline, {"svc__C": SVMModel.C_GRID, "svc__gamma": SVMModel.GAMMA_GRID}, cv=folds)
    search.fit(features["training"], train_labels)
    record = {f"{role}_raw": [float(np.mean(search.predict(features[role]) == splits[role][1]))]
              for role in ("choice", "test")}
    record["seconds"] = [time.perf_counter() - started]
    record["best_params"] = {name: str(value) for name, value in search.best_params_.items()}
    return settings, record


def run(args):
    data_dir = DATA_SETS[args.data]
    if not data_dir.is_dir():
        print(f"skipped: {data_dir} is not there")
        return
    os.chdir(REPO)  # the scripts' defaults are relative to the repository
    started = time.perf_counter()
    settings, record = (run_svm if args.model == "SVMModel" else run_cnn)(args, data_dir)
    line = {"data": args.data, "model": args.model, "variant": args.variant, "seed": args.seed,
            "settings": settings, "minutes": (time.perf_counter() - started) / 60,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "threads": args.threads, **record}
    with open(args.out, "a") as out:
        out.write(json.dumps(line) + "\n")


# Reading the runs: which epoch, and which weights and prediction, a script would keep.

def readings(result):
    """{reading: test accuracy} of one run, for each way a script could keep and use its model."""
    if result["model"] == "SVMModel":
        return {"as trained": result["test_raw"][0]}
    # The epoch a run keeps: highest val_accuracy, the lower val_loss on a tie.
    best = max(range(len(result["val_accuracy"])),
               key=lambda epoch: (result["val_accuracy"][epoch], -result["val_loss"][epoch]))
    found = {"last epoch": result["test_accuracy"][-1],
             "best choice-split epoch": result["test_accuracy"][best]}
    for epochs in result["test_raw_mirror"]:
        for weights, name in (("raw", ""), ("ema", ", EMA")):
            for mirror, mirror_name in (("", ""), ("_mirror", " + mirror")):
                found[f"epoch {epochs}{name}{mirror_name}"] = result[f"test_{weights}{mirror}"][epochs]
    return found


def summary(args):
    runs = collections.defaultdict(list)
    with open(args.results) as results:
        for line in results:
            result = json.loads(line)
            runs[result["model"], result["variant"], result["data"]].append(result)
    data_sets = [data for data in DATA_SETS if any(key[2] == data for key in runs)]
    print("| model | variant | reading | " + " | ".join(data_sets) + " | two-set mean | seeds | minutes a run |")
    print("|---|---|---|" + "---|" * (len(data_sets) + 3))
    for model, variant in sorted({(model, variant) for model, variant, _ in runs}):
        by_data = {data: [readings(result) for result in runs.get((model, variant, data), [])]
                   for data in data_sets}
        names = [name for name in next(found for found in by_data.values() if found)[0]]
        minutes = [result["minutes"] for data in data_sets for result in runs.get((model, variant, data), [])]
        seeds = sorted({len(found) for found in by_data.values() if found})
        for name in names:
            cells, real_means = [], []
            for data in data_sets:
                values = [found[name] for found in by_data[data] if name in found]
                if not values:
                    cells.append("")
                    continue
                mean = statistics.mean(values)
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                cells.append(f"{mean:.3f} ± {spread:.3f}")
                if data != "bundled":
                    real_means.append(mean)
            two_set = f"{statistics.mean(real_means):.3f}" if len(real_means) == 2 else ""
            print(f"| {model} | {variant} | {name} | " + " | ".join(cells)
                  + f" | {two_set} | {'/'.join(map(str, seeds))} | {statistics.mean(minutes):.1f} |")


# The README's results table: (model, settings as the README names them, variant, reading).
README_ROWS = [
    ("FirstModel", "2018", "2018", "last epoch"),
    ("FirstModel", "today", "defaults", "best choice-split epoch"),
    ("SecondModel", "2018", "defaults", "last epoch"),
    ("SecondModel", "today", "defaults", "best choice-split epoch"),
    ("SVMModel", "first port (2026)", "first port", "as trained"),
    ("SVMModel", "today", "defaults", "as trained"),
]


# What the 2018 README reported for the 2018 scripts, on the author's own photos (not published).
REPORTED_IN_2018 = {("FirstModel", "2018"): "0.88", ("SecondModel", "2018"): "0.82"}


def readme_table(args):
    runs = collections.defaultdict(list)
    with open(args.results) as results:
        for line in results:
            result = json.loads(line)
            runs[result["model"], result["variant"], result["data"]].append(readings(result))
    print("| model | settings | sign_digits4 | flowers4 | mean of the two | bundled shapes | seeds "
          "| 2018 README, its own photos |")
    print("|---|---|---|---|---|---|---|---|")
    for model, settings, variant, reading in README_ROWS:
        means = {data: statistics.mean(found[reading] for found in runs[model, variant, data])
                 for data in DATA_SETS if runs[model, variant, data]}
        seeds = {data: len(runs[model, variant, data]) for data in means}
        cells = [f"{means[data]:.2f}" if data in means else "" for data in ("sign_digits4", "flowers4")]
        two_set = (f"{(means['sign_digits4'] + means['flowers4']) / 2:.2f}"
                   if "sign_digits4" in means and "flowers4" in means else "")
        bundled = f"{means['bundled']:.2f}" if "bundled" in means else ""
        photo_seeds = max(seeds.get("sign_digits4", 0), seeds.get("flowers4", 0))
        bundled_seeds = (f" ({seeds['bundled']} on the shapes)"
                         if seeds.get("bundled", photo_seeds) != photo_seeds else "")
        print(f"| {model} | {settings} | {cells[0]} | {cells[1]} | {two_set} | {bundled} "
              f"| {photo_seeds}{bundled_seeds} | {REPORTED_IN_2018.get((model, settings), '')} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="train one model and append its record to --out")
    run_parser.add_argument("--data", choices=DATA_SETS, required=True)
    run_parser.add_argument("--model", choices=("FirstModel", "SecondModel", "SVMModel"), required=True)
    run_parser.add_argument("--variant", default="defaults")
    run_parser.add_argument("--seed", type=int, required=True)
    run_parser.add_argument("--epochs", type=int, default=0, help="default: the variant's")
    run_parser.add_argument("--threads", type=int, default=0,
                            help="TensorFlow threads; 1 when two runs share 2 cores")
    run_parser.add_argument("--out", required=True, help="JSON lines file to append to")
    summary_parser = commands.add_parser("summary", help="test accuracy by model, variant and reading")
    summary_parser.add_argument("results")
    readme_parser = commands.add_parser("readme", help="the README's results table")
    readme_parser.add_argument("results")
    args = parser.parse_args()
    if args.command == "run":
        args.out = os.path.abspath(args.out)
        run(args)
    else:
        {"summary": summary, "readme": readme_table}[args.command](args)


if __name__ == "__main__":
    main()
