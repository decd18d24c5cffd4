"""TransferModel's settings on real photos, against a logistic regression on the same features: a measurement.

    KERAS_HOME=/tmp/keras python tests/benchmarks/transfer.py run --data flowers4 --variant defaults \\
        --seed 1 --out transfer.jsonl      # one run: a JSON line
    python tests/benchmarks/transfer.py summary transfer.jsonl   # Markdown table
    python tests/benchmarks/transfer.py readme transfer.jsonl    # the README table's rows

$KERAS_HOME/models must hold the backbone's ImageNet weights (here the stand-in from
../shared/weights): nothing is downloaded. The splits are generalisation.py's: "test" is the
set's validation/ folder, "choice" a fixed 20 % of train/ on which epochs are picked (as
BestEpoch picks them on the validation folder), "training" the rest. Every epoch's accuracy
on both is recorded, so that fewer epochs of either stage are read from a longer run.
The bar: scikit-learn's LogisticRegressionCV (C by 5-fold cross-validation) on the base's
pooled features of the training split, the same features stage 1 trains on.
docs/transfer-learning.md says how it was run and what came out.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generalisation import DATA_SETS, REPO, read_splits  # noqa: E402

sys.path.insert(0, str(REPO))

# Changes to TransferModel's constants; stage 2 runs FINE_TUNE_EPOCHS after FEATURE_EPOCHS.
VARIANTS = {
    "defaults": {},
    "stage1-dropout0.5": {"DROPOUT": 0.5, "FINE_TUNE_EPOCHS": 0},
    "stage1-lr1e-4": {"FEATURE_LEARNING_RATE": 0.0001, "FEATURE_EPOCHS": 100, "FINE_TUNE_EPOCHS": 0},
    "stage1-size160": {"IMAGE_SIZE": 160, "FINE_TUNE_EPOCHS": 0},
    "stage1-100": {"FEATURE_EPOCHS": 100, "FINE_TUNE_EPOCHS": 0},
    "ft-lr1e-4": {"FINE_TUNE_LEARNING_RATE": 0.0001},
    "ft-3-blocks": {"FINE_TUNE_FROM": "block_14_expand"},
    "ft-3-blocks-lr1e-4": {"FINE_TUNE_FROM": "block_14_expand", "FINE_TUNE_LEARNING_RATE": 0.0001},
    "ft-no-augmentation": {"AUGMENTATION": {}},
}
FINE_TUNE_EPOCHS = 10  # every stage-2 variant runs this many; fewer are read from its records


def run(args):
    data_dir = DATA_SETS[args.data]
    if not data_dir.is_dir():
        print(f"skipped: {data_dir} is not there")
        return
    os.chdir(REPO)
    import TransferModel  # TensorFlow starts quietly in its runs.start()
    import keras
    from sklearn.linear_model import LogisticRegressionCV

    settings = {"FINE_TUNE_EPOCHS": FINE_TUNE_EPOCHS, **VARIANTS[args.variant]}
    fine_tune_from = settings.pop("FINE_TUNE_FROM", None)
    for name, value in settings.items():
        setattr(TransferModel, name, value)
    if fine_tune_from:
        module, _ = TransferModel.BACKBONES[TransferModel.BACKBONE]
        TransferModel.BACKBONES = {TransferModel.BACKBONE: (module, fine_tune_from)}
    size = TransferModel.IMAGE_SIZE
    # At other sizes Keras asks for other files; the 224 one loads at any size (docs say so).
    weights = (None if size == 224 else os.path.join(
        os.environ["KERAS_HOME"], "models", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"))
    splits, class_names = read_splits(data_dir, size)
    num_classes, batch_size = len(class_names), TransferModel.BATCH_SIZE
    keras.utils.set_random_seed(args.seed)
    started = time.perf_counter()
    model = TransferModel.build_model(TransferModel.load_base(size, weights), num_classes)
    features = dict(zip(splits, TransferModel.features_of(model, [images for images, _ in splits.values()],
                                                          batch_size)))
    feature_seconds = time.perf_counter() - started
    one_hot = {role: keras.utils.to_categorical(labels, num_classes) for role, (_, labels) in splits.items()}
    record = collections.defaultdict(list)

    class Recorder(keras.callbacks.Callback):
        def __init__(self, inputs):
            super().__init__()
            self.inputs = inputs

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            record["seconds"].append(time.perf_counter() - self.started)
            for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
                record[name].append(float(logs[name]))
            predicted = self.model.predict(self.inputs, verbose=0).argmax(1)
            record["test_accuracy"].append(float(np.mean(predicted == splits["test"][1])))

    started = time.perf_counter()
    classifier = TransferModel.set_stage(model, 1)
    classifier.fit(features["training"], one_hot["training"], batch_size=batch_size,
                   epochs=TransferModel.FEATURE_EPOCHS, validation_data=(features["choice"], one_hot["choice"]),
                   callbacks=[Recorder(features["test"])], verbose=0)
    stage_1_seconds = time.perf_counter() - started
    if TransferModel.FINE_TUNE_EPOCHS:
        import training
        fine_tuned = TransferModel.set_stage(model, 2)
        test_batches = training.validation_batches(*splits["test"], num_classes, batch_size).map(lambda x, y: x)
        fine_tuned.fit(
            training.training_batches(*splits["training"], num_classes, batch_size, args.seed,
                                         TransferModel.AUGMENTATION),
            validation_data=training.validation_batches(*splits["choice"], num_classes, batch_size),
            epochs=TransferModel.FEATURE_EPOCHS + TransferModel.FINE_TUNE_EPOCHS,
            initial_epoch=TransferModel.FEATURE_EPOCHS, shuffle=False, callbacks=[Recorder(test_batches)], verbose=0)
    bar = LogisticRegressionCV(Cs=10, cv=5, max_iter=5000).fit(features["training"], splits["training"][1])
    line = {"data": args.data, "variant": args.variant, "seed": args.seed,
            "settings": {**settings, "FINE_TUNE_FROM": TransferModel.BACKBONES[TransferModel.BACKBONE][1]},
            "feature_epochs": TransferModel.FEATURE_EPOCHS, "feature_seconds": feature_seconds,
            "stage_1_seconds": stage_1_seconds,
            "logistic_regression": float(bar.score(features["test"], splits["test"][1])),
            "logistic_regression_C": float(bar.C_[0]),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", **record}
    with open(args.out, "a") as out:
        out.write(json.dumps(line) + "\n")
    print(f"{args.data} {args.variant} seed {args.seed}: stage 1 kept {kept(line, line['feature_epochs'])[0]:.3f}, "
          f"all kept {kept(line, len(line['test_accuracy']))[0]:.3f}, bar {line['logistic_regression']:.3f}")


def kept(result, epochs):
    """(test accuracy, epoch) of the epoch BestEpoch keeps among the first epochs: highest
    accuracy on the choice split, the lower loss on a tie."""
    best = max(range(epochs), key=lambda epoch: (result["val_accuracy"][epoch], -result["val_loss"][epoch]))
    return result["test_accuracy"][best], best + 1


def summary(args):
    runs = collections.defaultdict(list)
    with open(args.results) as results:
        for line in results:
            result = json.loads(line)
            runs[result["variant"], result["data"]].append(result)
    data_sets = [data for data in DATA_SETS if any(key[1] == data for key in runs)]
    print("| variant | reading | " + " | ".join(data_sets) + " | seeds |")
    print("|---|---|" + "---|" * (len(data_sets) + 1))

    def cell(values, signed):
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):{'+' if signed else ''}.3f} ± {spread:.3f}"

    for variant in VARIANTS:
        found = {data: runs.get((variant, data), []) for data in data_sets}
        if not any(found.values()):
            continue
        any_run = next(results for results in found.values() if results)[0]
        readings = {f"stage 1, {epochs} epochs, kept": lambda r, e=epochs: kept(r, e)[0]
                    for epochs in (10, 30, 60, 100) if epochs <= any_run["feature_epochs"]}
        if len(any_run["test_accuracy"]) > any_run["feature_epochs"]:
            for extra in (5, 10):
                readings[f"+ stage 2, {extra} epochs, kept"] = (
                    lambda r, e=extra: kept(r, r["feature_epochs"] + e)[0])
            readings["+ stage 2, 10 epochs, last"] = lambda r: r["test_accuracy"][-1]
            # Paired: the same run's features, classifier and seed, with and without stage 2.
            for extra in (5, 10):
                readings[f"stage 2 gain ({extra} epochs), same run"] = (
                    lambda r, e=extra: kept(r, r["feature_epochs"] + e)[0] - kept(r, r["feature_epochs"])[0])
        readings["logistic regression (bar)"] = lambda r: r["logistic_regression"]
        readings["stage 1 minus the bar"] = lambda r: kept(r, r["feature_epochs"])[0] - r["logistic_regression"]
        for name, reading in readings.items():
            cells = [cell([reading(r) for r in found[data]], signed="gain" in name or "minus" in name)
                     if found[data] else "" for data in data_sets]
            seeds = sorted({len(results) for results in found.values() if results})
            print(f"| {variant} | {name} | " + " | ".join(cells) + f" | {'/'.join(map(str, seeds))} |")
    timings = [r for results in runs.values() for r in results if len(r["test_accuracy"]) > r["feature_epochs"]]
    if timings:
        print(f"\nThe features of a set's 428 photos: "
              f"{statistics.mean(r['feature_seconds'] for r in timings):.1f} s; stage 1: "
              f"{statistics.mean(r['stage_1_seconds'] for r in timings):.1f} s; stage 2 epoch: "
              f"{statistics.mean(s for r in timings for s in r['seconds'][r['feature_epochs']:]):.1f} s "
              f"({timings[0]['machine']})")


def readme_rows(args):
    """The README results table's rows for TransferModel, its defaults, beside the other models'."""
    runs = collections.defaultdict(list)
    with open(args.results) as results:
        for line in results:
            result = json.loads(line)
            if result["variant"] == "defaults":
                runs[result["data"]].append(result)
    rows = [("TransferModel", "stage 1, stand-in weights", lambda r: kept(r, r["feature_epochs"])[0]),
            ("TransferModel", "stages 1 + 2, stand-in weights", lambda r: kept(r, len(r["test_accuracy"]))[0]),
            ("logistic regression", "on the same features (the bar)", lambda r: r["logistic_regression"])]
    for model, settings, reading in rows:
        means = {data: statistics.mean(reading(r) for r in found) for data, found in runs.items()}
        cells = [f"{means[data]:.2f}" if data in means else "" for data in ("sign_digits4", "flowers4")]
        two_set = (f"{(means['sign_digits4'] + means['flowers4']) / 2:.2f}"
                   if "sign_digits4" in means and "flowers4" in means else "")
        bundled = f"{means['bundled']:.2f}" if "bundled" in means else ""
        seeds = max(len(runs.get("sign_digits4", [])), len(runs.get("flowers4", [])))
        print(f"| {model} | {settings} | {cells[0]} | {cells[1]} | {two_set} | {bundled} | {seeds} |  |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="train once and append the record to --out")
    run_parser.add_argument("--data", choices=DATA_SETS, required=True)
    run_parser.add_argument("--variant", choices=VARIANTS, default="defaults")
    run_parser.add_argument("--seed", type=int, required=True)
    run_parser.add_argument("--out", required=True, help="JSON lines file to append to")
    summary_parser = commands.add_parser("summary", help="test accuracy by variant and reading")
    summary_parser.add_argument("results")
    readme_parser = commands.add_parser("readme", help="TransferModel's rows of the README's table")
    readme_parser.add_argument("results")
    args = parser.parse_args()
    if args.command == "run":
        args.out = os.path.abspath(args.out)
        run(args)
    else:
        {"summary": summary, "readme": readme_rows}[args.command](args)


if __name__ == "__main__":
    main()
