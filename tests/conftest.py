"""Shared fixtures: run a script as a user would, and make small image folders on the fly."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests import image_tools

# One colour per class: a small CNN tells them apart within a few epochs.
CLASS_COLOURS = [(220, 40, 40), (40, 40, 220), (40, 200, 40), (230, 200, 40)]


# Runs a script as on macOS or Windows, or from a FAT/exFAT drive: without Linux's
# os.sched_getaffinity, and with hard links failing as they do there.
WITHOUT_LINUX_CALLS = """
import os, runpy, sys
del os.sched_getaffinity
def link(source, destination, **options):
    raise PermissionError(1, "Operation not permitted", destination)
os.link = link
script = sys.argv.pop(1)
sys.argv[0] = script
sys.path.insert(0, os.path.dirname(script))
runpy.run_path(script, run_name="__main__")
"""


def run_script(script, *args, cwd, without_linux_calls=False):
    """Run one of the repository's scripts in a fresh Python process, in folder cwd, as a user does."""
    command = [sys.executable, str(REPO / script), *map(str, args)]
    if without_linux_calls:
        command[1:1] = ["-c", WITHOUT_LINUX_CALLS]
    env = dict(os.environ, PYTHONHASHSEED="0")
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


def stderr_lines(result):
    """The non-empty lines a script printed to stderr (TensorFlow's start-up lines are hidden by it)."""
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_one_line_error(result, *expected_parts):
    """The script failed with one line on stderr, holding every expected part, and no traceback."""
    assert result.returncode != 0
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for part in expected_parts:
        assert part in lines[0]


def logged_scalars(event_dir):
    """{tag: {step: value}} of the scalars in a TensorBoard event folder."""
    events = EventAccumulator(str(event_dir), size_guidance={"tensors": 0})
    events.Reload()
    return {tag: {event.step: float(np.asarray(tensor_util.make_ndarray(event.tensor_proto)))
                  for event in events.Tensors(tag)}
            for tag in events.Tags()["tensors"]
            if events.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"}


def make_images(folder, counts, size=(40, 30), seed=0):
    """Write counts[class] noisy images of each class's colour into folder/<class>/."""
    rng = np.random.default_rng(seed)
    for index, (class_name, count) in enumerate(counts.items()):
        class_dir = Path(folder) / class_name
        class_dir.mkdir(parents=True, exist_ok=True)
        colour = np.array(CLASS_COLOURS[index % len(CLASS_COLOURS)])
        for number in range(count):
            noise = rng.integers(-30, 30, size=(size[1], size[0], 3))
            pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)
            extension = "png" if number % 3 == 0 else "jpg"
            Image.fromarray(pixels).save(class_dir / f"{class_name}_{number:03d}.{extension}")
    return Path(folder)


@pytest.fixture
def small_dataset(tmp_path):
    """Two imbalanced classes: train 8 'apple' and 4 'berry', validation 4 and 4."""
    train_dir = make_images(tmp_path / "train", {"apple": 8, "berry": 4}, seed=1)
    validation_dir = make_images(tmp_path / "validation", {"apple": 4, "berry": 4}, seed=2)
    return train_dir, validation_dir
