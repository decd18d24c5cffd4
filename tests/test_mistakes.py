"""What the models get wrong: the mistakes table after a run, and --check-labels' suspects."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import reports
from helpers import make_images, run_in_process, stderr_lines

TRAINING_FLAGS = {
    "FirstModel.py": ["--epochs", 4, "--batch-size", 2, "--image-size", 32],
    "SecondModel.py": ["--epochs", 4, "--batch-size", 2, "--image-size", 32],
    "SVMModel.py": [],
}


def mistakes_printed(stdout):
    """The table a run prints after 'Misclassified validation images', as lists of its columns."""
    lines = stdout.split("Misclassified validation images, most confident first:\n", 1)[1].splitlines()
    assert lines[0] == "path\ttrue class\tpredicted class\tprobability"
    return [line.split("\t") for line in lines[1:] if "\t" in line]


@pytest.mark.parametrize("script", list(TRAINING_FLAGS))
def test_the_mistakes_table_is_the_models_own_predictions(script, tmp_path):
    train_dir = make_images(tmp_path / "train", {"apple": 10, "berry": 10}, seed=1)
    validation_dir = make_images(tmp_path / "validation", {"apple": 4, "berry": 4}, seed=2)
    # Two berries filed as apples, and one apple as a berry: mistakes for a model that learnt.
    for number, (source, target) in enumerate([("berry", "apple"), ("berry", "apple"), ("apple", "berry")]):
        path = sorted((validation_dir / source).glob(f"{source}_*"))[number]
        (validation_dir / target / "mislabelled").mkdir(exist_ok=True)
        shutil.move(path, validation_dir / target / "mislabelled" / path.name)
    model_file = tmp_path / f"model{'.joblib' if script == 'SVMModel.py' else '.h5'}"
    result = run_in_process(script, "--train-dir", train_dir, "--validation-dir", validation_dir,
                            "--log-dir", tmp_path / "logs", "--model-file", model_file,
                            *TRAINING_FLAGS[script], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table = mistakes_printed(result.stdout)

    predicted = run_in_process(script, "--predict", validation_dir, "--model-file", model_file, cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    predictions = {}
    for line in predicted.stdout.splitlines():
        path, class_name, probability = line.split("\t")
        predictions[str(os.path.relpath(path, validation_dir))] = (class_name, float(probability))
    wrong = {path: prediction for path, prediction in predictions.items()
             if prediction[0] != path.split(os.sep)[0]}
    # Every mistake, and only mistakes, with the class and probability --predict gives it,
    # paths relative to the validation folder, the most confident first.
    assert len(wrong) >= 2
    assert {row[0] for row in table} == set(wrong)
    for path, true_class, predicted_class, probability in table:
        assert true_class == path.split(os.sep)[0]
        assert (predicted_class, float(probability)) == pytest.approx(wrong[path], abs=1e-4)
    probabilities = [float(row[3]) for row in table]
    assert probabilities == sorted(probabilities, reverse=True)


def test_the_mistakes_table_is_capped():
    labels, predictions = np.zeros(30, dtype=int), np.ones(30, dtype=int)
    confidences = np.linspace(0.5, 0.99, 30)
    table = reports.mistakes_table([f"a/{n}.jpg" for n in range(30)], labels, predictions,
                                   confidences, ["ant", "bee"]).splitlines()
    assert len(table) == 1 + 20 + 1 and table[-1] == "and 10 more"
    assert table[1] == "a/29.jpg\tant\tbee\t0.9900"  # the most confident first
    assert reports.mistakes_table(["a.jpg"], [1], [1], [0.9], ["ant", "bee"]).splitlines() == [
        "path\ttrue class\tpredicted class\tprobability"]


@pytest.mark.parametrize("script, flags", [
    ("SVMModel.py", []),
    ("FirstModel.py", ["--image-size", 32, "--batch-size", 2]),
])
def test_check_labels_finds_planted_wrong_labels_first(script, flags, tmp_path):
    train_dir = make_images(tmp_path / "train", {"apple": 15, "berry": 15, "cherry": 15}, seed=1)
    planted = {}  # {path: the class of the picture}
    for number, (source, target) in enumerate([("apple", "berry"), ("berry", "cherry"), ("cherry", "apple")]):
        path = sorted((train_dir / source).iterdir())[number]
        shutil.move(path, train_dir / target / path.name)
        planted[str(train_dir / target / path.name)] = source
    before = {path: path.read_bytes() for path in train_dir.rglob("*") if path.is_file()}

    # Five folds of 5 epochs, not 10: the colours are learnt in a few (the constant, edited as a user does).
    constants = {"CHECK_LABELS_EPOCHS": 5} if script == "FirstModel.py" else None
    result = run_in_process(script, "--check-labels", "--train-dir", train_dir, *flags, cwd=tmp_path,
                            constants=constants)
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == []
    suspects = [line.split("\t") for line in result.stdout.splitlines() if "\t" in line]
    assert len(suspects) >= 3
    assert (f"{len(suspects)} training images whose label looks wrong, the most suspect first "
            "(path, given class, its probability, likely class):") in result.stdout
    assert {row[0] for row in suspects[:3]} == set(planted)
    for path, given, probability, likely in suspects[:3]:
        assert given == Path(path).parent.name and likely == planted[path]
        assert 0 <= float(probability) < 0.5
    # Nothing is moved or changed.
    assert {path: path.read_bytes() for path in train_dir.rglob("*") if path.is_file()} == before


def test_check_labels_folds_keep_near_duplicates_together(tmp_path):
    """A copy in another fold would vouch for a wrong label the copies share: each group is held out whole, by the
    CNNs' folds and by the SVM's cross-validation."""
    import SVMModel
    import photos
    import training
    train_dir = make_images(tmp_path / "train", {"apple": 8, "berry": 8}, seed=1)
    for number in range(4):  # one photo filed wrong, with its copies
        shutil.copy(train_dir / "apple" / "apple_001.jpg", train_dir / "berry" / f"copy_{number}.jpg")
    images, labels, paths, class_names, folds = training.label_check_folds(train_dir, 32, 1, 5)
    copies = [index for index, path in enumerate(paths) if "copy_" in path or path.endswith("apple_001.jpg")]
    assert len(copies) == 5 and len(folds) == 5
    for _, held_out in folds:
        assert len(set(copies) & set(held_out)) in (0, 5)
    groups = photos.near_duplicate_groups(photos.perceptual_hashes(images))
    for _, held_out in SVMModel.cross_validation_folds(labels, groups, class_names, str(train_dir), 1):
        assert len(set(copies) & set(held_out)) in (0, 5)
