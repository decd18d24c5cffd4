"""Photo folders as they come from phones and shared drives: odd files are skipped, odd images read."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import photos
import runs
from helpers import make_images, run_in_process, stderr_lines

RED = (200, 30, 30)


def save_red(path, size=(40, 30), **options):
    Image.new("RGB", size, RED).save(path, **options)
    return path


def write_corrupt_files(folder):
    """One of each kind of file that has an image extension and does not decode."""
    full = save_red(folder / "full.jpg", size=(400, 300), quality=95).read_bytes()
    (folder / "truncated.jpg").write_bytes(full[:len(full) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is text with an image extension")
    (folder / "noise.png").write_bytes(np.random.default_rng(0).bytes(5000))
    (folder / "full.jpg").unlink()
    return ["empty.png", "noise.png", "notes.jpg", "truncated.jpg"]


def test_non_image_files_are_ignored_and_usual_extensions_used(tmp_path):
    folder = tmp_path / "cats"
    folder.mkdir()
    for name in (".DS_Store", "Thumbs.db", "notes.txt", "._IMG_1.JPG", ".hidden.png", "desktop.ini"):
        (folder / name).write_bytes(b"\0\5Mac OS X")
    images = {"IMG_1.JPG": "JPEG", "b.jpeg": "JPEG", "c.png": "PNG", "d.BMP": "BMP", "e.gif": "GIF",
              "f.tif": "TIFF", "g.webp": "WEBP", "h.Png": "PNG"}
    for name, image_format in images.items():
        save_red(folder / name, format=image_format)

    assert photos.list_images(folder) == sorted(images)
    loaded, labels, paths = photos.read_image_folder(tmp_path, ["cats"], 32, "training")
    assert len(loaded) == len(images)
    assert np.abs(loaded.astype(int) - RED).max() <= 8


def test_unreadable_files_are_skipped_with_one_warning_each(tmp_path, capsys):
    make_images(tmp_path, {"a": 2, "b": 2})
    broken = write_corrupt_files(tmp_path / "b")

    images, labels, paths = photos.read_image_folder(tmp_path, ["a", "b"], 32, "training")
    assert len(images) == 4 and labels.tolist() == [0, 0, 1, 1]
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == len(broken) + 1
    for warning, name in zip(warnings, broken):
        assert warning.startswith(f"warning: skipped '{tmp_path / 'b' / name}': ")
    assert "the file is empty" in warnings[0]
    assert "not an image" in warnings[1]
    assert warnings[-1] == "warning: skipped 4 of 8 training images that could not be read"


def test_a_class_left_without_readable_images_is_a_clear_error(tmp_path):
    make_images(tmp_path, {"a": 2})
    (tmp_path / "b").mkdir()
    write_corrupt_files(tmp_path / "b")
    with pytest.raises(runs.DataError, match=f"'{tmp_path / 'b'}' has no readable images"):
        photos.read_image_folder(tmp_path, ["a", "b"], 32, "training")


def image_in_mode(mode):
    red = Image.new("RGB", (40, 30), RED)
    if mode.startswith("P"):
        image = red.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
        if mode == "P-transparent":
            image.info["transparency"] = 3  # an unused index: nothing transparent
        return image
    if mode == "I;16":
        grey = np.asarray(red.convert("L"), dtype=np.uint16) * 257
        return Image.fromarray(grey)
    if mode == "1":
        return Image.new("1", red.size, 1)  # all white: converting red would dither
    return red.convert(mode)


@pytest.mark.parametrize("mode, extension", [
    ("L", "png"), ("P", "gif"), ("P-transparent", "png"), ("RGBA", "png"), ("LA", "png"),
    ("CMYK", "jpg"), ("CMYK", "tif"), ("1", "png"), ("1", "bmp"), ("I;16", "png"), ("I;16", "tif"),
])
def test_every_colour_mode_becomes_rgb(mode, extension, tmp_path):
    path = tmp_path / f"image.{extension}"
    image_in_mode(mode).save(path)
    loaded = photos.read_image(path, 32).astype(int)
    assert loaded.shape == (32, 32, 3)

    if mode in ("L", "LA", "I;16"):
        expected = np.full(3, Image.new("RGB", (1, 1), RED).convert("L").getpixel((0, 0)))
    elif mode == "1":
        expected = np.array([255, 255, 255])
    else:
        expected = np.array(RED)
    # Within JPEG's and the palette's rounding.
    assert np.abs(loaded - expected).max() <= 12, loaded[0, 0]


def test_transparent_pixels_are_white(tmp_path):
    rgba = np.zeros((30, 40, 4), dtype=np.uint8)
    rgba[:, :20] = (*RED, 255)  # the left half red, the right half fully transparent black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cutout.png")
    loaded = photos.read_image(tmp_path / "cutout.png", 40).astype(int)
    assert np.abs(loaded[:, :15] - RED).max() <= 2
    assert loaded[:, 25:].min() >= 253


def test_exif_rotated_phone_photo_is_turned_upright(tmp_path):
    # Stored sideways (taller than wide, red on top) with EXIF orientation 6:
    # the camera was turned, and the upright picture has red on the right.
    stored = np.zeros((400, 300, 3), dtype=np.uint8)
    stored[:200] = RED
    stored[200:] = (30, 30, 200)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)

    upright = photos.read_rgb(tmp_path / "phone.jpg")
    assert upright.size == (400, 300)
    loaded = photos.read_image(tmp_path / "phone.jpg", 100).astype(int)
    assert np.abs(loaded[:, 60:] - RED).max() <= 12
    assert np.abs(loaded[:, :40] - (30, 30, 200)).max() <= 12


def test_a_50_megapixel_photo_loads(tmp_path):
    Image.new("RGB", (8660, 5780), RED).save(tmp_path / "big.jpg", quality=80)
    loaded = photos.read_image(tmp_path / "big.jpg", 150).astype(int)
    assert np.abs(loaded - RED).max() <= 8


def png_claiming_size(path, width, height):
    """A tiny PNG whose header claims width x height pixels, as a decompression bomb does."""
    header = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + header + struct.pack(">I", zlib.crc32(header))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk + b"\0\0\0\0IEND\xaeB`\x82")
    return path


def test_decompression_bombs_are_skipped_with_a_warning(tmp_path, capsys):
    make_images(tmp_path, {"a": 1, "b": 1})
    png_claiming_size(tmp_path / "a" / "bomb.png", 30000, 30000)
    images, labels, _ = photos.read_image_folder(tmp_path, ["a", "b"], 32, "training")
    assert labels.tolist() == [0, 1]
    warning = capsys.readouterr().err.splitlines()[0]
    assert warning.startswith(f"warning: skipped '{tmp_path / 'a' / 'bomb.png'}': more pixels than")
    assert "decompression bombs" in warning


def test_spaces_non_ascii_names_and_symlinked_class_folders(tmp_path):
    make_images(tmp_path / "elsewhere", {"chats noirs": 2})
    make_images(tmp_path / "data", {"été": 3})
    (tmp_path / "data" / "été" / "été_000.png").rename(tmp_path / "data" / "été" / "Photo d’été 1.png")
    (tmp_path / "data" / "chats noirs").symlink_to(tmp_path / "elsewhere" / "chats noirs")

    names = photos.class_folder_names(tmp_path / "data", "training")
    assert names == ["chats noirs", "été"]
    images, labels, paths = photos.read_image_folder(tmp_path / "data", names, 32, "training")
    assert labels.tolist() == [0, 0, 1, 1, 1]
    assert str(tmp_path / "data" / "été" / "Photo d’été 1.png") in paths


@pytest.mark.parametrize("script", ["FirstModel.py", "SecondModel.py"])
def test_models_train_past_broken_files_in_messy_folders(script, tmp_path):
    train_dir = make_images(tmp_path / "photos (copy)" / "train", {"chat": 4, "été": 4})
    validation_dir = make_images(tmp_path / "photos (copy)" / "validation", {"chat": 2, "été": 2}, seed=1)
    broken = write_corrupt_files(train_dir / "été")
    (train_dir / "chat" / ".DS_Store").write_bytes(b"\0")
    image_in_mode("CMYK").save(train_dir / "chat" / "print scan.TIF")
    image_in_mode("I;16").save(train_dir / "chat" / "16-bit scan.png")

    result = run_in_process(script, "--train-dir", train_dir, "--validation-dir", validation_dir,
                            "--epochs", 1, "--image-size", 32, "--log-dir", tmp_path / "logs",
                            "--model-file", tmp_path / "model.h5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    warnings = [line for line in stderr_lines(result) if line.startswith("warning: ")]
    assert [line.split("'")[1] for line in warnings[:-1]] == [
        str(train_dir / "été" / name) for name in broken]
    assert warnings[-1] == "warning: skipped 4 of 14 training images that could not be read"
    assert "Read 14 images" in result.stdout
    assert (tmp_path / "model.h5").is_file()
