"""Photos named in another encoding than UTF-8 (old archives): shown with replacement characters,
read and written under their real names, and never the end of a run."""

import os
import sys

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import CLASS_COLOURS, make_images, run_in_process, stderr_lines

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="other systems keep file names as valid Unicode")

LATIN_1_NAME = b"caf\xe9 cr\xe8me.png"  # as an archive made on an old Windows or Linux machine names it
SHOWN_AS = "caf\ufffd cr\ufffdme.png"


def save_under_bytes_name(folder, name, colour):
    with open(os.fsencode(folder) + b"/" + name, "wb") as file:
        Image.fromarray(np.full((30, 40, 3), colour, dtype=np.uint8)).save(file, format="PNG")


def test_a_misclassified_validation_photo_with_such_a_name_does_not_stop_the_save(tmp_path):
    train_dir = make_images(tmp_path / "train", {"apple": 8, "berry": 8}, seed=1)
    validation_dir = make_images(tmp_path / "validation", {"apple": 3, "berry": 3}, seed=2)
    save_under_bytes_name(validation_dir / "apple", LATIN_1_NAME, CLASS_COLOURS[1])  # a berry, filed as an apple
    result = run_in_process("FirstModel.py", "--train-dir", train_dir, "--validation-dir", validation_dir,
                            "--epochs", 3, "--batch-size", 2, "--image-size", 32, "--log-dir", tmp_path / "logs",
                            "--model-file", tmp_path / "model.h5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == []
    assert (tmp_path / "model.h5").is_file() and (tmp_path / "model.last.h5").is_file()
    mistakes = result.stdout.split("Misclassified validation images, most confident first:\n")[1]
    assert f"apple/{SHOWN_AS}\tapple\tberry\t" in mistakes
    # The same text in TensorBoard.
    [run_dir] = (tmp_path / "logs").iterdir()
    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    events.Reload()
    [logged] = events.Tensors("misclassified_validation_list")
    assert SHOWN_AS in logged.tensor_proto.string_val[0].decode()

    # --predict on the folder and on the photo itself: the name shown, the photo read.
    predicted = run_in_process("FirstModel.py", "--predict", validation_dir, "--model-file", tmp_path / "model.h5",
                               cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    assert f"{validation_dir / 'apple' / SHOWN_AS}\tberry\t" in predicted.stdout
    assert len(predicted.stdout.splitlines()) == 7
    one = run_in_process("FirstModel.py", "--predict", os.fsdecode(os.fsencode(validation_dir / "apple") + b"/"
                                                                   + LATIN_1_NAME),
                         "--model-file", tmp_path / "model.h5", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    assert one.stdout.startswith(f"{validation_dir / 'apple' / SHOWN_AS}\tberry\t")


def test_check_labels_and_warnings_show_such_names(tmp_path):
    train_dir = make_images(tmp_path / "train", {"apple": 15, "berry": 15}, seed=1)
    berry = train_dir / "berry" / "berry_000.png"
    os.rename(berry, os.fsencode(train_dir / "apple") + b"/" + LATIN_1_NAME)  # a berry labelled apple
    with open(os.fsencode(train_dir / "berry") + b"/broken \xff.jpg", "wb") as file:
        file.write(b"not a picture")
    result = run_in_process("SVMModel.py", "--check-labels", "--train-dir", train_dir, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == [
        f"warning: skipped '{train_dir / 'berry'}/broken \ufffd.jpg': not an image that Pillow can read",
        "warning: skipped 1 of 31 training images that could not be read"]
    suspects = [line.split("\t") for line in result.stdout.splitlines() if "\t" in line]
    assert suspects[0][:2] == [str(train_dir / "apple" / SHOWN_AS), "apple"] and suspects[0][3] == "berry"


def test_augmentation_samples_take_photos_so_named(tmp_path):
    image = os.fsdecode(os.fsencode(tmp_path) + b"/" + LATIN_1_NAME)
    save_under_bytes_name(tmp_path, LATIN_1_NAME, CLASS_COLOURS[0])
    result = run_in_process("UnitaryImageAugmentationSample.py", "--image", image, "--count", 2,
                            "--output-dir", tmp_path / "out", "--log-dir", tmp_path / "logs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "out").iterdir())) == 2
    [run_dir] = (tmp_path / "logs").iterdir()
    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    events.Reload()
    assert SHOWN_AS in events.SummaryMetadata("before_and_after_augmentation").summary_description

    train_dir = make_images(tmp_path / "train", {"apple": 2, "berry": 2}, seed=1)
    validation_dir = make_images(tmp_path / "validation", {"apple": 1, "berry": 1}, seed=2)
    save_under_bytes_name(train_dir / "apple", LATIN_1_NAME, CLASS_COLOURS[0])
    balanced = run_in_process("ClassImageAugmentationSample.py", "--train-dir", train_dir, "--validation-dir",
                              validation_dir, "--output-dir", tmp_path / "generated", "--train-target", 5,
                              "--validation-target", 2, "--log-dir", tmp_path / "logs", cwd=tmp_path)
    assert balanced.returncode == 0, balanced.stderr
    assert os.fsencode(tmp_path / "generated" / "train" / "apple") + b"/" + LATIN_1_NAME in [
        os.fsencode(path) for path in (tmp_path / "generated" / "train" / "apple").iterdir()]
