"""--validation-split: one folder split by name and seed, near-duplicates on one side; with two
folders, near-duplicates across them, or across classes, warned about."""

import io
import json
import os
import shutil

import h5py
import joblib
import numpy as np
import pytest
from PIL import Image, ImageEnhance
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import photos
import runs
from helpers import MOBILENET_WEIGHTS, REPO, assert_one_line_error, make_images, run_in_process, stderr_lines

CLASS_NAMES = ["apple", "berry"]
SCRIPTS = ["FirstModel.py", "SecondModel.py", "SVMModel.py", "TransferModel.py"]


def plant_copies(photo, folder, prefix):
    """Near-duplicates of photo (a bundled image) in folder: resized, re-encoded, cropped all round and
    on one side, brightened."""
    image = Image.open(photo).convert("RGB")
    width, height = image.size
    folder.mkdir(parents=True, exist_ok=True)
    copies = {"resized.png": image.resize((width // 2, height // 2)),
              "cropped.png": image.crop((width // 20, height // 20, width - width // 20, height - height // 20)),
              "trimmed.png": image.crop((0, 0, width - width // 20, height)),
              "brighter.png": ImageEnhance.Brightness(image).enhance(1.3)}
    encoded = io.BytesIO()
    image.save(encoded, "JPEG", quality=30)
    (folder / f"{prefix}reencoded.jpg").write_bytes(encoded.getvalue())
    for name, copy in copies.items():
        copy.save(folder / f"{prefix}{name}")
    return sorted(path.name for path in folder.glob(f"{prefix}*"))


def split_of(train_dir, fraction=0.25, seed=5):
    """{path within the folder: held out} of train_dir, as the scripts split it."""
    (_, train_labels, _), (_, _, names), _ = photos.read_training_and_validation(
        str(train_dir), None, CLASS_NAMES, 32, fraction, seed)
    paths = [str(path.relative_to(train_dir)) for path in sorted(train_dir.glob("*/*"))]
    assert len(train_labels) + len(names) == len(paths)
    return {path: path in names for path in paths}


def test_split_is_repeatable_and_keeps_photos_on_their_side_when_photos_are_added(tmp_path):
    train_dir = make_images(tmp_path / "photos", {"apple": 30, "berry": 30}, seed=1)
    first = split_of(train_dir)
    assert split_of(train_dir) == first
    held_out = sum(first.values())
    assert 6 <= held_out <= 24  # a quarter of 60, give or take what hashes give
    assert split_of(train_dir, seed=6) != first

    make_images(tmp_path / "more", {"apple": 40, "berry": 40}, seed=2)
    for path in (tmp_path / "more").glob("*/*"):
        shutil.move(path, train_dir / path.parent.name / f"new_{path.name}")
    after = split_of(train_dir)
    assert len(after) == 140
    assert {path: after[path] for path in first} == first
    assert sum(after.values()) > held_out  # new photos went to both sides


def test_the_split_is_the_same_on_every_system():
    """Pinned: a hash of 'seed/path within the class folder', '/' between folders on Windows too,
    not Python's own hash() (another value in every process) nor the order files are listed in."""
    names = {"cats": ["IMG_0001.jpg", "IMG_0002.jpg", os.path.join("holiday", "IMG_0003.jpg"), "IMG_0004.jpg"],
             "dogs": ["a.png", "b.png", "c.png", "d.png"]}
    paths = [os.path.join("photos", class_name, name) for class_name in names for name in names[class_name]]
    held = photos.held_out("photos", paths, np.array([0, 0, 0, 0, 1, 1, 1, 1]), np.arange(8), list(names),
                           0.5, 2018)
    assert held.tolist() == [True, False, True, True, True, False, False, True]


def test_a_photo_moved_to_another_class_keeps_its_side(tmp_path):
    train_dir = make_images(tmp_path / "photos", {"apple": 30, "berry": 30}, seed=1)
    first = split_of(train_dir)
    shutil.move(train_dir / "apple" / "apple_005.jpg", train_dir / "berry" / "apple_005.jpg")
    assert split_of(train_dir)["berry/apple_005.jpg"] == first["apple/apple_005.jpg"]


def test_resized_reencoded_cropped_and_brightened_copies_land_on_one_side(tmp_path, capsys):
    train_dir = make_images(tmp_path / "photos", {"apple": 30, "berry": 30}, seed=1)
    sides = set()
    for number, photo in enumerate(sorted((REPO / "data" / "train" / "star").iterdir())[:6]):
        copies = plant_copies(photo, train_dir / "apple", f"star{number}_")
        shutil.copy(photo, train_dir / "apple" / f"star{number}_original{photo.suffix}")
        split = split_of(train_dir)
        group = {split[f"apple/{name}"] for name in copies + [f"star{number}_original{photo.suffix}"]}
        assert len(group) == 1, number
        sides |= group
    assert sides == {True, False}  # groups go either way, not all to one side
    assert capsys.readouterr().out.splitlines()[-1].endswith("each kept on one side (near_duplicates.tsv in the "
                                                             "TensorBoard run): 6")


def test_two_folders_name_planted_near_duplicates_and_the_same_photo_in_two_classes(tmp_path):
    train_dir = make_images(tmp_path / "train", {"apple": 6, "berry": 6}, seed=1)
    validation_dir = make_images(tmp_path / "validation", {"apple": 3, "berry": 3}, seed=2)
    stars = sorted((REPO / "data" / "train" / "star").iterdir())[:2]
    for photo in stars:
        shutil.copy(photo, train_dir / "apple" / photo.name)
    planted = plant_copies(stars[0], validation_dir / "apple", "a_") + plant_copies(stars[1], validation_dir / "apple", "b_")
    shutil.copy(stars[1], validation_dir / "berry" / "same_photo.png")  # the same photo, another class

    result = run_in_process("SVMModel.py", "--train-dir", train_dir, "--validation-dir", validation_dir,
                            "--log-dir", tmp_path / "logs", "--model-file", tmp_path / "svm.joblib", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = stderr_lines(result)
    assert warnings[0] == ("warning: validation images that are near-duplicates of training images: "
                           f"{len(planted) + 1}, so val_accuracy flatters the model; move each to the side "
                           "of its group, or remove it (the list is also in near_duplicates.tsv in the TensorBoard run):")
    # A group a line per photo: its number, path, class and side.
    assert warnings[1:3] == ["group\tpath\tclass\tside", f"1\t{train_dir / 'apple' / stars[0].name}\tapple\ttraining"]
    for name in planted:
        assert f"{1 if name.startswith('a_') else 2}\t{validation_dir / 'apple' / name}\tapple\tvalidation" in warnings
    mixed = [f"2\t{train_dir / 'apple' / stars[1].name}\tapple\ttraining",
             f"2\t{validation_dir / 'berry' / 'same_photo.png'}\tberry\tvalidation"]
    heading = warnings.index("warning: groups of near-duplicate images in different classes: 1; one label in each is "
                             "wrong, or the classes are too alike to tell apart:")
    assert all(line in warnings[heading + 1:] for line in mixed)
    [run_dir] = (tmp_path / "logs").iterdir()
    table = (run_dir / "near_duplicates.tsv").read_text(encoding="utf-8").splitlines()
    assert len(table) == 1 + 2 + len(planted) + 1 and all(line in table for line in mixed)


def test_the_same_photo_in_two_classes_of_one_folder_is_named(tmp_path, capsys):
    train_dir = make_images(tmp_path / "photos", {"apple": 10, "berry": 10}, seed=1)
    star = sorted((REPO / "data" / "train" / "star").iterdir())[0]
    shutil.copy(star, train_dir / "apple" / "star.png")
    shutil.copy(star, train_dir / "berry" / "star copy.png")
    split = split_of(train_dir, 0.5)
    assert split["apple/star.png"] == split["berry/star copy.png"]
    side = "validation" if split["apple/star.png"] else "training"
    assert capsys.readouterr().err.splitlines() == [
        "warning: groups of near-duplicate images in different classes: 1; one label in each is wrong, or the "
        "classes are too alike to tell apart:", "group\tpath\tclass\tside",
        f"1\t{train_dir / 'apple' / 'star.png'}\tapple\t{side}",
        f"1\t{train_dir / 'berry' / 'star copy.png'}\tberry\t{side}"]


def test_an_unrelated_set_gives_no_near_duplicates():
    """The bundled shapes: 341 training and 87 validation images, none a copy of another."""
    images, _, _ = photos.read_image_folder(REPO / "data" / "train", ["circle", "square", "star", "triangle"],
                                            150, "training")
    hashes = photos.perceptual_hashes(images)
    validation, _, _ = photos.read_image_folder(REPO / "data" / "validation",
                                                ["circle", "square", "star", "triangle"], 150, "validation")
    assert photos.near_duplicates(hashes) == []
    assert photos.near_duplicates(photos.perceptual_hashes(validation), hashes) == []


def test_long_lists_are_cut_at_20_lines_with_the_count():
    lines = photos.first_lines(["heading"] + [f"photo {index}" for index in range(25)]).split("\n")
    assert len(lines) == 22 and lines[-2] == "photo 19" and lines[-1] == "and 5 more"


def test_a_large_group_of_the_same_photo_is_listed_once_a_photo_not_once_a_pair(tmp_path):
    """300 copies of one photo, half in each folder: 300 lines, where a line a pair made 22,500 (1,200 made 75 MB)."""
    for folder, count in (("train", 150), ("validation", 150)):
        make_images(tmp_path / folder, {"apple": 2, "berry": 2}, seed=1 if folder == "train" else 2)
        for number in range(count):
            shutil.copy(tmp_path / "train" / "apple" / "apple_000.png",
                        tmp_path / folder / "apple" / f"same_{number}.png")
    train, _, run_files = photos.read_training_and_validation(tmp_path / "train", tmp_path / "validation", CLASS_NAMES,
                                                              32, None, 1)
    table = run_files["near_duplicates.tsv"].splitlines()
    assert len(table) == 1 + 1 + 150 + 150  # the heading, then the group: the photo copied, and its 300 copies
    assert {line.split("\t")[0] for line in table[1:]} == {"1"}
    assert len(set(train[2][:152])) < 152  # the training photos' groups: the copies share one


@pytest.mark.parametrize("script", SCRIPTS)
def test_one_folder_trains_with_validation_split(script, tmp_path, request):
    train_dir = make_images(tmp_path / "photos", {"apple": 12, "berry": 12}, seed=1)
    model_file = tmp_path / ("model.joblib" if script == "SVMModel.py" else "model.h5")
    run = ["--train-dir", train_dir, "--log-dir", tmp_path / "logs", "--model-file", model_file]
    if script != "SVMModel.py":
        run += ["--image-size", 32, "--batch-size", 4]
    constants = None
    if script == "TransferModel.py":
        run += ["--weights", request.getfixturevalue("keras_home") / "models" / MOBILENET_WEIGHTS]
        constants = {"FEATURE_EPOCHS": 2, "FEATURE_LEARNING_RATE": 0.1}
    result = run_in_process(script, *run, "--validation-split", 0.2, "--seed", 3,
                            *([] if script == "SVMModel.py" else ["--epochs", 1]), cwd=tmp_path, constants=constants)
    assert result.returncode == 0, result.stderr
    assert "Validation images per class: 20% of each class above, by name and --seed" in result.stdout
    assert "groups of near-duplicates, each kept on one side (near_duplicates.tsv in the TensorBoard run): 0" in (
        result.stdout)
    [run_dir] = (tmp_path / "logs").iterdir()
    listed = (run_dir / "validation_files.txt").read_text(encoding="utf-8").split()
    assert listed == [name for name, held in split_of(train_dir, 0.2, 3).items() if held]
    assert {name.split("/")[0] for name in listed} == {"apple", "berry"}
    events = EventAccumulator(str(run_dir))
    events.Reload()
    session = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["validation_split"].number_value == 0.2
    if script == "SVMModel.py":
        assert joblib.load(model_file)["validation_split"] == "--validation-split 0.2 --seed 3"
        return
    with h5py.File(model_file, "r") as saved:
        assert {name: json.loads(saved.attrs["settings"])[name] for name in ("validation_split", "seed")} == {
            "validation_split": 0.2, "seed": 3}
    if script != "FirstModel.py":
        return
    # --initial-epoch goes on with the same split, and refuses another.
    result = run_in_process(script, *run, "--validation-split", 0.4, "--seed", 3, "--epochs", 2,
                            "--initial-epoch", 1, cwd=tmp_path)
    assert_one_line_error(result, f"cannot resume '{tmp_path / 'model.last.h5'}': it was trained with other settings "
                          "(validation_split 0.2 then, 0.4 now)")
    result = run_in_process(script, *run, "--validation-dir", train_dir, "--epochs", 2, "--initial-epoch", 1,
                            cwd=tmp_path)
    assert_one_line_error(result, "(validation_split 0.2 then, 0.0 now)")
    result = run_in_process(script, *run, "--validation-split", 0.2, "--seed", 3, "--epochs", 2,
                            "--initial-epoch", 1, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Epoch 2/2" in result.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_validation_dir_with_validation_split_is_a_one_line_error(script, tmp_path):
    train_dir = make_images(tmp_path / "photos", {"apple": 4, "berry": 4}, seed=1)
    result = run_in_process(script, "--train-dir", train_dir, "--validation-dir", train_dir,
                            "--validation-split", 0.2, cwd=tmp_path)
    assert_one_line_error(result, "--validation-dir and --validation-split cannot be used together")
    result = run_in_process(script, "--train-dir", train_dir, "--validation-split", 1, cwd=tmp_path)
    assert_one_line_error(result, "--validation-split 1.0 must be a fraction between 0 and 1")


def test_a_class_left_without_validation_images_is_a_one_line_error(tmp_path):
    train_dir = make_images(tmp_path / "photos", {"apple": 4, "berry": 2}, seed=1)
    result = run_in_process("SVMModel.py", "--train-dir", train_dir, "--validation-split", 0.05, cwd=tmp_path)
    assert_one_line_error(result, "--validation-split 0.05 leaves no validation image in", "choose another fraction")
    assert not (tmp_path / "logs").exists()


def test_a_class_of_near_duplicates_alone_cannot_be_split_and_says_so(tmp_path):
    """Frames of a still camera: another fraction or --seed can never split them, and the line does not say it can."""
    train_dir = make_images(tmp_path / "photos", {"apple": 6, "berry": 1}, seed=1)
    frame = train_dir / "berry" / "berry_000.png"
    for number in range(1, 6):
        shutil.copy(frame, train_dir / "berry" / f"frame_{number}.png")
    result = run_in_process("SVMModel.py", "--train-dir", train_dir, "--validation-split", 0.3, cwd=tmp_path)
    assert_one_line_error(result, f"--validation-split cannot split '{train_dir / 'berry'}': its 6 readable photos "
                                  "are all near-duplicates of each other", "--validation-dir")


def test_a_split_that_leaves_the_svm_too_few_counts_the_folder_and_what_is_left(tmp_path):
    import SVMModel
    train_dir = make_images(tmp_path / "photos", {"apple": 4, "berry": 3}, seed=1)
    with pytest.raises(runs.DataError) as refused:
        SVMModel.cross_validation_folds(np.array([0, 0, 0, 1]), np.arange(4), CLASS_NAMES, str(train_dir), 1, 0.5)
    assert str(refused.value) == (f"training class folder '{train_dir / 'berry'}' holds 3 images, of which "
                                  "--validation-split 0.5 leaves 1 to train on: cross-validation needs at least 2 per "
                                  "class; add images, or hold out a smaller fraction")



def test_one_folder_without_the_flag_is_told_of_it(tmp_path):
    train_dir = make_images(tmp_path / "photos", {"apple": 4, "berry": 4}, seed=1)
    result = run_in_process("SVMModel.py", "--train-dir", train_dir, cwd=tmp_path)
    assert_one_line_error(result, "validation folder 'data/validation' does not exist",
                          "or hold out photos of --train-dir with --validation-split 0.2")


def test_check_labels_looks_at_the_whole_folder(tmp_path):
    train_dir = make_images(tmp_path / "photos", {"apple": 12, "berry": 12}, seed=1)
    wrong = train_dir / "berry" / "apple_005.jpg"  # held out by the split: only a check of the whole folder sees it
    shutil.move(train_dir / "apple" / "apple_005.jpg", wrong)
    result = run_in_process("SVMModel.py", "--train-dir", train_dir, "--validation-split", 0.2, "--check-labels",
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    heading = lines.index("1 training images whose label looks wrong, the most suspect first (path, given class, "
                          "its probability, likely class):")
    assert lines[heading + 1].startswith(f"{wrong}\tberry\t") and lines[heading + 1].endswith("\tapple")
