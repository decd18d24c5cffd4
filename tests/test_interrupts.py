"""Ctrl-C, crashes and kills: saved models stay whole, and a new run picks up where one stopped."""

import os
import signal
import subprocess
import sys
import time

import keras
import pytest

import image_tools
from conftest import REPO, make_images, own_stderr_lines, run_script


def start_script(script, *args, cwd):
    """Start a script as run_script does, without waiting for it, its output unbuffered."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(REPO / script), *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class FailingModel:
    """Stands for a Keras model whose save is cut short half-way through the file."""

    def save(self, path):
        with open(path, "wb") as file:
            file.write(b"\x89HDF half a model")
        raise KeyboardInterrupt

    save_weights = save


def test_a_save_cut_short_leaves_the_previous_model_whole(tmp_path):
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(2)])
    model_file = str(tmp_path / "model.h5")
    image_tools.save_model(model, model_file, ["ant", "bee"])
    saved = {name: (tmp_path / name).read_bytes() for name in ("model.h5", "model.weights.h5")}

    with pytest.raises(KeyboardInterrupt):
        image_tools.save_model(FailingModel(), model_file, ["ant", "bee"])
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == saved
    assert keras.models.load_model(model_file).output_shape == (None, 2)


@pytest.mark.parametrize("script", ["FirstModel.py", "SecondModel.py"])
def test_ctrl_c_saves_a_partial_model_and_says_how_to_resume(script, small_dataset, tmp_path):
    train_dir, validation_dir = small_dataset
    model_file = tmp_path / "model.h5"
    model_file.write_bytes(b"the model saved by an earlier run")
    arguments = ["--train-dir", train_dir, "--validation-dir", validation_dir, "--image-size", 32,
                 "--log-dir", tmp_path / "logs"]

    process = start_script(script, *arguments, "--epochs", 1000, "--model-file", model_file,
                           cwd=tmp_path)
    for line in process.stdout:
        if line.startswith("Epoch 3/"):
            break
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)

    assert process.returncode != 0
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    lines = own_stderr_lines(result)
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    partial_file = tmp_path / "model.partial.h5"
    assert lines[0].startswith("Interrupted after epoch ")
    completed = int(lines[0].split()[3].rstrip(";"))
    assert completed >= 2
    assert lines[0].endswith(f"To go on: python {script} --model-file {partial_file} "
                             f"--initial-epoch {completed} --epochs 1000")
    assert model_file.read_bytes() == b"the model saved by an earlier run"
    assert (tmp_path / "model.partial.weights.h5").is_file()

    resumed = run_script(script, *arguments, "--model-file", partial_file,
                         "--initial-epoch", completed, "--epochs", completed + 1, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Epoch {completed + 1}/{completed + 1}" in resumed.stdout


def test_class_balancer_killed_half_way_completes_on_the_next_run(tmp_path):
    train_dir = make_images(tmp_path / "train", {"apple": 3, "berry": 2})
    validation_dir = make_images(tmp_path / "validation", {"apple": 1, "berry": 1})
    output_dir = tmp_path / "generated"
    arguments = ["--train-dir", train_dir, "--validation-dir", validation_dir,
                 "--output-dir", output_dir, "--train-target", 400, "--validation-target", 5]

    process = start_script("ClassImageAugmentationSample.py", *arguments, cwd=tmp_path)
    apples = output_dir / "train" / "apple"
    while process.poll() is None and len(list(apples.glob("Random_*"))) < 50:
        time.sleep(0.02)
    process.kill()
    process.wait()
    written = {path: path.read_bytes() for path in output_dir.rglob("Random_*")}
    assert 50 <= len(written) < 800 - 5

    result = run_script("ClassImageAugmentationSample.py", *arguments, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for split, target in (("train", 400), ("validation", 5)):
        for class_name in ("apple", "berry"):
            assert len(image_tools.list_images(output_dir / split / class_name)) == target
    # What the killed run wrote is kept as it was.
    assert all(path.read_bytes() == data for path, data in written.items())
