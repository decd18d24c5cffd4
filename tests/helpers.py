"""What the tests share: running the scripts as users do, small image folders, TensorBoard events.

run_script starts a script in a new Python process, exactly as `python Script.py ...`;
run_in_process runs its `__main__` in the test's own process, seconds faster (no new
TensorFlow start), for the runs whose process itself is not what a test is about.
"""

import contextlib
import importlib.util
import io
import os
import re
import runpy
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

import image_files

REPO = Path(__file__).resolve().parent.parent

# One colour per class: a small CNN tells them apart within a few epochs.
CLASS_COLOURS = [(220, 40, 40), (40, 40, 220), (40, 200, 40), (230, 200, 40)]


def run_script(script, *args, cwd):
    """Run one of the repository's scripts in a fresh Python process, in folder cwd, as a user does."""
    command = [sys.executable, str(REPO / script), *map(str, args)]
    env = dict(os.environ, PYTHONHASHSEED="0")
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


def start_script(script, *args, cwd, **options):
    """Start a script as run_script does, without waiting for it, its output unbuffered so that
    a test can act on a line as soon as it is printed."""
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(REPO / script), *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options)


def stop_at_line(process, prefix, signal_number):
    """Send signal_number to a started script when it prints a line starting with prefix (as a
    user presses Ctrl-C on seeing it), then wait for its end: its CompletedProcess."""
    watchdog = threading.Timer(600, process.kill)  # never wait for ever on a script that hangs
    watchdog.start()
    try:
        stdout = []
        for line in process.stdout:
            stdout.append(line)
            if line.startswith(prefix):
                process.send_signal(signal_number)
                break
        rest, stderr = process.communicate(timeout=600)
    finally:
        watchdog.cancel()
    return subprocess.CompletedProcess(process.args, process.returncode, "".join(stdout) + rest, stderr)


# The stop signals this system has, by name: SIGINT (Ctrl-C), SIGTERM, and SIGHUP but on Windows.
STOPS = {signal.Signals(number).name: number for number in image_files.STOP_SIGNALS}


def set_mark(path):
    """The mark save_run gives every file of a set it saves together."""
    with h5py.File(path, "r") as saved:
        return saved.attrs.get("save_id")


def saved_epoch(model_file):
    """The epoch a model file saved by the scripts holds, counted from 1."""
    with h5py.File(model_file, "r") as saved:
        return int(saved.attrs["epoch"])


def check_partial_set(result, stop, model_file, epochs=6):
    """The one line a stopped run ends with, its status, and the partial set it names: (command
    that goes on, partial file, epochs completed)."""
    assert result.returncode == 128 + STOPS[stop]  # 130, 143, 129: as a shell shows it
    lines = stderr_lines(result)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    completed = int(lines[0].split()[3].rstrip(";"))
    partial_file = model_file.parent / lines[0].split("saved ")[1].split(",")[0]
    assert partial_file.name.startswith(f"{model_file.stem}.partial-") and partial_file.is_file()
    saved = ", ".join(str(partial_file).replace(".h5", kind) for kind in (
        ".h5", ".weights.h5", ".last.h5", ".last.weights.h5"))
    best_epoch = saved_epoch(partial_file)
    assert lines[0].startswith(f"Interrupted after epoch {completed}; saved {saved} "
                               f"(kept: epoch {best_epoch}). To go on: python ")
    # Only complete epochs: two at least, as many as the last file holds.
    assert 2 <= completed < epochs and 1 <= best_epoch <= completed
    assert saved_epoch(str(partial_file).replace(".h5", ".last.h5")) == completed
    return shlex.split(lines[0].split("To go on: ")[1]), partial_file, completed


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



def run_in_process(script, *args, cwd, constants=None):
    """Run script with args in this process, in folder cwd, as `python script args` would run:
    its exit code, stdout and stderr. constants, if given, replace the script's top-of-file
    constants, as a user edits them; the run then calls main() as the script's end does."""
    import keras
    stdout, stderr, returncode = io.StringIO(), io.StringIO(), 0
    saved_argv, saved_cwd = sys.argv, os.getcwd()
    sys.argv = [str(REPO / script), *map(str, args)]
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
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


def run_transfer(photos, tmp_path, *extra_args, constants=None):
    """TransferModel in this process on photos at 32x32, 3 epochs of stage 1 (at a learning rate
    for the stand-in's small features), then stage 2."""
    train_dir, validation_dir = photos
    return run_in_process(
        "TransferModel.py", "--train-dir", train_dir, "--validation-dir", validation_dir, "--image-size", 32,
        "--batch-size", 8, "--log-dir", tmp_path / "logs", "--model-file", tmp_path / "transfer.h5", *extra_args,
        cwd=tmp_path, constants={"FEATURE_EPOCHS": 3, "FEATURE_LEARNING_RATE": 0.1, **(constants or {})})


def optimizer_iterations(model_file):
    """The steps the optimizer saved in a model file has taken."""
    with h5py.File(model_file, "r") as saved:
        [optimizer] = saved["optimizer_weights"].values()  # "adam", or "adam_1" after stage 1's
        return int(optimizer["iteration"][()])
