"""ClassImageAugmentationSample.py: exact top-up counts, a no-op second run, untouched originals."""

import hashlib

from PIL import Image

from helpers import assert_one_line_error, make_images, run_in_process, stderr_lines


def snapshot(folder):
    """{relative path: sha256} of every file under folder."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def balance(tmp_path, train_dir, validation_dir, *extra_args):
    return run_in_process(
        "ClassImageAugmentationSample.py", "--train-dir", train_dir,
        "--validation-dir", validation_dir, "--output-dir", tmp_path / "generated",
        "--train-target", 6, "--validation-target", 3, *extra_args, cwd=tmp_path)


def test_tops_classes_up_to_the_exact_target(tmp_path):
    train_dir = make_images(tmp_path / "train", {"apple": 7, "berry": 2, "cherry": 6})
    validation_dir = make_images(tmp_path / "validation", {"apple": 1, "berry": 3, "cherry": 2})
    originals = snapshot(tmp_path / "train") | snapshot(tmp_path / "validation")

    result = balance(tmp_path, train_dir, validation_dir)
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == []

    generated = tmp_path / "generated"
    counts = {f"{split}/{name}": len(list((generated / split / name).iterdir()))
              for split in ("train", "validation") for name in ("apple", "berry", "cherry")}
    assert counts == {"train/apple": 7, "train/berry": 6, "train/cherry": 6,
                      "validation/apple": 3, "validation/berry": 3, "validation/cherry": 3}
    # Over the target: reported and left alone.
    assert f"{generated / 'train' / 'apple'}: 7 images, at or above the target of 6; left alone" \
        in result.stdout
    # The originals are copied as they are, the rest are augmented JPEGs.
    berries = sorted(path.name for path in (generated / "train" / "berry").iterdir())
    assert berries == ["Random_0001.jpg", "Random_0002.jpg", "Random_0003.jpg", "Random_0004.jpg",
                       "berry_000.png", "berry_001.jpg"]
    assert (generated / "train" / "berry" / "berry_001.jpg").read_bytes() == \
        (train_dir / "berry" / "berry_001.jpg").read_bytes()
    with Image.open(generated / "train" / "berry" / "Random_0004.jpg") as image:
        assert image.format == "JPEG" and image.size == (40, 30)

    # The originals are untouched, and a second run adds nothing.
    assert snapshot(tmp_path / "train") | snapshot(tmp_path / "validation") == originals
    before_second_run = snapshot(generated)
    again = balance(tmp_path, train_dir, validation_dir)
    assert again.returncode == 0, again.stderr
    assert snapshot(generated) == before_second_run
    assert again.stdout.count("left alone") == 6


def test_balanced_output_trains_without_moving_files(tmp_path):
    train_dir = make_images(tmp_path / "train", {"apple": 4, "berry": 2})
    validation_dir = make_images(tmp_path / "validation", {"apple": 2, "berry": 1})
    assert balance(tmp_path, train_dir, validation_dir).returncode == 0
    result = run_in_process(
        "SecondModel.py", "--train-dir", tmp_path / "generated" / "train",
        "--validation-dir", tmp_path / "generated" / "validation", "--epochs", 1,
        "--image-size", 32, "--log-dir", tmp_path / "logs", "--model-file", tmp_path / "s.h5",
        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Training images per class: {'apple': 6, 'berry': 6}" in result.stdout
    assert "Class weights: apple 1.000, berry 1.000" in result.stdout


def test_unreadable_originals_are_skipped_with_a_warning(tmp_path):
    train_dir = make_images(tmp_path / "train", {"apple": 2, "berry": 2})
    validation_dir = make_images(tmp_path / "validation", {"apple": 1, "berry": 1})
    (train_dir / "berry" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")

    result = balance(tmp_path, train_dir, validation_dir)
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == [
        f"warning: cannot read image '{train_dir / 'berry' / 'broken.jpg'}': "
        "not an image that Pillow can read; skipped"]
    berries = sorted(path.name for path in (tmp_path / "generated" / "train" / "berry").iterdir())
    assert len(berries) == 6 and "broken.jpg" not in berries
    assert (train_dir / "berry" / "broken.jpg").read_bytes() == b"\xff\xd8\xff not really a JPEG"


def test_never_loses_an_original_whatever_its_name(tmp_path):
    train_dir = make_images(tmp_path / "train", {"apple": 2, "berry": 2})
    validation_dir = make_images(tmp_path / "validation", {"apple": 1, "berry": 1})
    apples = train_dir / "apple"
    # A sub-folder image and a flat one that flattening would name alike, and an original
    # named like the generated copies, added after a first run generated Random_0001.jpg.
    (apples / "2019").mkdir()
    (apples / "apple_000.png").rename(apples / "2019" / "a.jpg")
    (apples / "apple_001.jpg").rename(apples / "2019_a.jpg")
    assert balance(tmp_path, train_dir, validation_dir).returncode == 0
    generated = tmp_path / "generated" / "train" / "apple"
    assert (generated / "Random_0001.jpg").is_file()
    make_images(tmp_path / "later", {"apple": 1}, seed=7)
    (tmp_path / "later" / "apple" / "apple_000.png").rename(apples / "Random_0001.jpg")

    result = balance(tmp_path, train_dir, validation_dir, "--train-target", 8)
    assert result.returncode == 0, result.stderr
    assert f"copied as {generated / 'Random_0001_2.jpg'}" in result.stdout
    originals = {path.read_bytes() for path in apples.rglob("*") if path.is_file()}
    balanced = [path.read_bytes() for path in generated.rglob("*") if path.is_file()]
    assert len(originals) == 3 and originals <= set(balanced) and len(balanced) == 8
    assert (generated / "2019" / "a.jpg").read_bytes() == (apples / "2019" / "a.jpg").read_bytes()
    # A third run finds every original copied, and adds nothing.
    before = snapshot(tmp_path / "generated")
    assert balance(tmp_path, train_dir, validation_dir, "--train-target", 8).returncode == 0
    assert snapshot(tmp_path / "generated") == before


def test_output_folder_among_the_originals_is_refused(tmp_path):
    train_dir = make_images(tmp_path / "data" / "train", {"apple": 2, "berry": 2})
    validation_dir = make_images(tmp_path / "data" / "validation", {"apple": 1, "berry": 1})
    originals = snapshot(tmp_path / "data")
    for output_dir in (train_dir / "balanced", tmp_path / "data", validation_dir / "apple"):
        result = run_in_process("ClassImageAugmentationSample.py", "--train-dir", train_dir,
                                "--validation-dir", validation_dir, "--output-dir", output_dir,
                                cwd=tmp_path)
        assert_one_line_error(result, f"--output-dir '{output_dir}'",
                              "choose an output folder outside the training and validation folders")
    assert snapshot(tmp_path / "data") == originals
