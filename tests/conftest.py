"""Fixtures; the shared code the tests import is in helpers.py."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the tests import the scripts' helper modules, and the scripts

from helpers import make_images  # noqa: E402


@pytest.fixture
def small_dataset(tmp_path):
    """Two imbalanced classes: train 8 'apple' and 4 'berry', validation 4 and 4."""
    train_dir = make_images(tmp_path / "train", {"apple": 8, "berry": 4}, seed=1)
    validation_dir = make_images(tmp_path / "validation", {"apple": 4, "berry": 4}, seed=2)
    return train_dir, validation_dir
