"""What the tests share: running the scripts as users do, small image folders, TensorBoard events.

start_script starts a script in a new Python process, exactly as `python Script.py ...`;
run_in_process runs its `__main__` in the test's own process, seconds faster (no new
TensorFlow start), for the runs whose process itself is not what a test is about.
"""

import contextlib
import importlib.util
import io
import os
import re
import runpy
import signal
import subprocess
import sys
import unittest.mock
from pathlib import Path

import h5py
import numpy as np
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

import runs
import training

REPO = Path(__file__).resolve().parent.parent

# One colour per class: a small CNN tells them apart within a few epochs.
CLASS_COLOURS = [(220, 40, 40), (40, 40, 220), (40, 200, 40), (230, 200, 40)]


def stops_by_default():
    """In a new process, before its program starts: the stop signals as a terminal gives them, whatever
    the tests inherited (a suite started in the background, or under nohup, has SIGINT or SIGHUP ignored)."""
    for number in runs.STOP_SIGNALS:
        signal.signal(number, signal.SIG_DFL)


def start_script(script, *args, cwd):
    """Start one of the repository's scripts in a new Python process, in folder cwd, as a user does,
    without waiting for it, its output unbuffered so that a test can act on a line as soon as printed."""
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(REPO / script), *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=None if os.name == "nt" else stops_by_default)


# The stop signals this system has, by name: SIGINT (Ctrl-C), SIGTERM, and SIGHUP but on Windows.
STOPS = {signal.Signals(number).name: number for number in runs.STOP_SIGNALS}


def saved_epoch(model_file):
    """The epoch a model file saved by the scripts holds, counted from 1."""
    with h5py.File(model_file, "r") as saved:
        return int(saved.attrs["epoch"])


def save_model(model, model_file, class_names, epoch, metrics=None, kept=None, settings=None):
    """Save model as a run of the scripts leaves it: its weights as the last epoch, epoch, and as
    the epoch kept, or kept (epoch, metrics, weights) when given; its optimizer built, as by training;
    settings, the run's (script, classes, image_size, validation_split), when given."""
    if getattr(model, "optimizer", None) and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    last = (epoch, metrics or {}, model.get_weights())
    return training.save_model_files(model, str(model_file), class_names, kept or last, last, settings or {})


def assert_stopped_in_one_line(result, signal_number, *expected_parts):
    """A script a stop ended: one line on stderr holding every expected part, and the process ended by
    the signal (a shell then shows 128 + its number); run_in_process gives that number itself."""
    assert result.returncode in (-signal_number, 128 + signal_number), (result.returncode, result.stderr)
    lines = stderr_lines(result)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for part in expected_parts:
        assert part in lines[0], lines[0]


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



def run_in_process(script, *args, cwd, constants=None, stdout=None):
    """Run script with args in this process, in folder cwd, as `python script args` would run:
    its exit code, stdout and stderr. constants, if given, replace the script's top-of-file
    constants, as a user edits them; the run then calls main() as the script's end does. A stop
    ends the run with 128 + the signal's number instead of ending this process by the signal.
    stdout, if given, is the text stream the script writes to."""
    import keras
    stdout, stderr, returncode = stdout or io.StringIO(), io.StringIO(), 0
    saved_argv, saved_cwd = sys.argv, os.getcwd()
    saved_handlers = {number: signal.getsignal(number) for number in runs.STOP_SIGNALS}
    sys.argv = [str(REPO / script), *map(str, args)]
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), \
                unittest.mock.patch.object(runs, "end_by_signal", lambda number: sys.exit(128 + number)):
            if constants:
                spec = importlib.util.spec_from_file_location(Path(script).stem, REPO / script)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                vars(module).update(constants)
                module.main()
            else:
                runpy.run_path(str(REPO / script), run_name="__main__")
    except SystemExit as exit:  # as Python ends: a message is printed and the code is 1
        if isinstance(exit.code, str):
            stderr.write(exit.code + "\n")
        returncode = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        for number, handler in saved_handlers.items():
            signal.signal(number, handler)
        keras.backend.clear_session()  # each run starts from a clean Keras, as in a new process
    return subprocess.CompletedProcess(sys.argv, returncode, stdout.getvalue(), stderr.getvalue())


# The last line of a model script's run: the figures of the epoch kept, as the 2018 README has them.
FINAL_LINE = re.compile(
    r"^loss: (\d+\.\d+) - accuracy: (\d+\.\d+) - val_loss: (\d+\.\d+) - val_accuracy: (\d+\.\d+)$")


def reload_and_predict(model_file, image_size, batch):
    """Load a saved model as any Keras 3 program would, with no custom objects: its output shape."""
    import keras

    model = keras.models.load_model(model_file)
    return model.predict(np.zeros((batch, image_size, image_size, 3)), verbose=0).shape


# TransferModel: Keras' name for MobileNetV2's no-top ImageNet weights, which tests stand in for.
MOBILENET_WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def optimizer_iterations(model_file):
    """The steps the optimizer saved in a model file has taken."""
    with h5py.File(model_file, "r") as saved:
        [optimizer] = saved["optimizer_weights"].values()  # "adam", or "adam_1" after stage 1's
        return int(optimizer["iteration"][()])
