"""UnitaryImageAugmentationSample.py: augmented copies of one image."""

from PIL import Image

from helpers import assert_one_line_error, make_images, run_in_process, stderr_lines


def test_writes_21_copies_by_default_and_never_overwrites(tmp_path):
    make_images(tmp_path / "data" / "train", {"shapes": 1}, size=(60, 50))
    (tmp_path / "data" / "train" / "shapes" / "shapes_000.png").rename(
        tmp_path / "data" / "train" / "refImage.png")

    # With no flags, as in 2018: data/train/refImage.png into data/generated.
    result = run_in_process("UnitaryImageAugmentationSample.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    copies = sorted((tmp_path / "data" / "generated").iterdir())
    assert [path.name for path in copies] == [f"MY_CLASS_{n:04d}.jpg" for n in range(1, 22)]
    with Image.open(copies[0]) as image:
        assert image.format == "JPEG" and image.size == (60, 50)

    # A second run with the same prefix adds new copies after the first 21, leaving those as they were.
    written = {path.name: path.read_bytes() for path in copies}
    again = run_in_process("UnitaryImageAugmentationSample.py", "--count", 3, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    after = sorted(path.name for path in (tmp_path / "data" / "generated").iterdir())
    assert after == [f"MY_CLASS_{n:04d}.jpg" for n in range(1, 25)]
    assert all((tmp_path / "data" / "generated" / name).read_bytes() == data
               for name, data in written.items())


def test_flags_choose_image_folder_count_and_prefix(tmp_path):
    make_images(tmp_path / "in", {"cat": 1})
    result = run_in_process("UnitaryImageAugmentationSample.py", "--image", tmp_path / "in/cat/cat_000.png",
                            "--output-dir", tmp_path / "out", "--count", 4, "--prefix", "cat", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "cat_0001.jpg", "cat_0002.jpg", "cat_0003.jpg", "cat_0004.jpg"]


def test_missing_image_is_one_clear_line(tmp_path):
    result = run_in_process("UnitaryImageAugmentationSample.py", "--image", tmp_path / "nope.png",
                            cwd=tmp_path)
    assert result.returncode != 0
    assert stderr_lines(result) == [
        f"UnitaryImageAugmentationSample.py: error: image '{tmp_path / 'nope.png'}' does not exist: "
        "name an image with --image"]


def test_corrupt_image_is_one_clear_line(tmp_path):
    (tmp_path / "half.png").write_bytes(b"\x89PNG\r\n\x1a\n and then nothing")
    result = run_in_process("UnitaryImageAugmentationSample.py", "--image", tmp_path / "half.png",
                            "--output-dir", tmp_path / "out", cwd=tmp_path)
    assert_one_line_error(result, f"cannot read image '{tmp_path / 'half.png'}'")
    assert not (tmp_path / "out").exists()
