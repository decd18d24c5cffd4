"""The bundled sample set: made by data/make_sample_data.py, byte for byte, as described."""

import filecmp
import subprocess
import sys

from PIL import Image

from helpers import REPO

DATA = REPO / "data"
EXPECTED = {"train": {"circle": 120, "square": 100, "triangle": 70, "star": 51},
            "validation": {"circle": 30, "square": 25, "triangle": 18, "star": 14}}


def test_generator_remakes_the_bundled_files_byte_for_byte(tmp_path):
    subprocess.run([sys.executable, str(DATA / "make_sample_data.py"), "--output-dir", str(tmp_path)],
                   check=True, capture_output=True)
    for split, counts in EXPECTED.items():
        for class_name in counts:
            bundled, remade = DATA / split / class_name, tmp_path / split / class_name
            names = sorted(path.name for path in bundled.iterdir())
            assert names == sorted(path.name for path in remade.iterdir())
            _, mismatch, errors = filecmp.cmpfiles(bundled, remade, names, shallow=False)
            assert mismatch == [] and errors == []
    assert filecmp.cmp(DATA / "train" / "refImage.png", tmp_path / "train" / "refImage.png",
                       shallow=False)


def test_sample_set_is_small_imbalanced_and_mixed():
    images = [path for split in EXPECTED for path in (DATA / split).rglob("*") if path.is_file()]
    for split, counts in EXPECTED.items():
        for class_name, count in counts.items():
            assert len(list((DATA / split / class_name).iterdir())) == count
    assert sum(path.stat().st_size for path in images) <= 5_000_000
    assert {path.suffix for path in images} == {".jpg", ".png"}
    sides = []
    for path in images:
        with Image.open(path) as image:
            sides.extend(image.size)
    assert 150 <= min(sides) and max(sides) <= 400
