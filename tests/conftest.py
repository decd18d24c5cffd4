"""Fixtures; the shared code the tests import is in helpers.py."""

import signal
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the tests import the scripts' helper modules, and the scripts

import runs  # noqa: E402

with runs.start_up_lines_hidden():  # helpers load TensorFlow: without its start-up lines, as the scripts do
    from helpers import make_images  # noqa: E402


def handler_as_a_terminal_gives(number):
    """The handler pytest has, or a terminal's where the suite was started with the signal ignored (in the
    background, under nohup): the stops the tests deliver in this process must not be ignored."""
    handler = signal.getsignal(number)
    if handler is not signal.SIG_IGN:
        return handler
    return signal.default_int_handler if number == signal.SIGINT else signal.SIG_DFL


# Before any test module imports a script, whose runs.start() takes them over.
PYTEST_HANDLERS = {number: handler_as_a_terminal_gives(number) for number in runs.STOP_SIGNALS}


@pytest.fixture(autouse=True)
def stops_as_pytest_handles_them():
    """Each test starts with pytest's handlers of the stop signals: Ctrl-C stops the tests."""
    for number, handler in PYTEST_HANDLERS.items():
        signal.signal(number, handler)


@pytest.fixture
def small_dataset(tmp_path):
    """Two imbalanced classes: train 8 'apple' and 4 'berry', validation 4 and 4."""
    train_dir = make_images(tmp_path / "train", {"apple": 8, "berry": 4}, seed=1)
    validation_dir = make_images(tmp_path / "validation", {"apple": 4, "berry": 4}, seed=2)
    return train_dir, validation_dir


@pytest.fixture(scope="session")
def keras_home(tmp_path_factory):
    """A Keras folder whose cache holds MobileNetV2's no-top ImageNet weights file as Keras names
    it (helpers.MOBILENET_WEIGHTS): its shapes and Keras' format, random values (the batch
    normalisation's variance set so that features neither vanish nor saturate: they then tell
    colours apart, as ImageNet's do). TransferModel loads it as it loads a user's download."""
    import keras
    import numpy as np

    from helpers import MOBILENET_WEIGHTS

    home = tmp_path_factory.mktemp("keras_home")
    (home / "models").mkdir()
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False, weights=None)
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_variance.assign(np.full(layer.moving_variance.shape, 0.1, "float32"))
    base.save(home / "models" / MOBILENET_WEIGHTS)
    keras.backend.clear_session()
    return home


@pytest.fixture
def colours(tmp_path):
    """Three colours, 12 training and 4 validation images each."""
    counts = {"apple": 12, "berry": 12, "cherry": 12}
    return (make_images(tmp_path / "train", counts, seed=1),
            make_images(tmp_path / "validation", {name: 4 for name in counts}, seed=2))
