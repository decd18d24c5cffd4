"""What the runs leave in TensorBoard, read back from a real `tensorboard --logdir` server."""

import io
import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import reports
from helpers import make_images, run_in_process

FIRST_MODEL_EPOCHS = 11  # CONFUSION_MATRIX_EVERY is 10: one matrix after epoch 10, one at the end


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """One log folder holding a run of each script on a tiny data set: {script: (run name, stdout)}."""
    work = tmp_path_factory.mktemp("tensorboard")
    train_dir = make_images(work / "train", {"apple": 8, "berry": 4}, seed=1)
    validation_dir = make_images(work / "validation", {"apple": 4, "berry": 4}, seed=2)
    # A berry filed with the apples: a mistake for every model that learnt the colours.
    (validation_dir / "berry" / "berry_003.png").rename(validation_dir / "apple" / "filed_wrong.png")
    log_dir = work / "logs"
    runs = {}
    for script, args in (
        ("FirstModel.py", ["--epochs", FIRST_MODEL_EPOCHS, "--model-file", work / "first.h5"]),
        ("SecondModel.py", ["--epochs", 2, "--model-file", work / "second.h5"]),
        ("SVMModel.py", ["--model-file", work / "svm.joblib"]),
    ):
        if script != "SVMModel.py":
            args += ["--batch-size", 2, "--image-size", 32]
        result = run_in_process(script, "--train-dir", train_dir, "--validation-dir", validation_dir,
                                "--log-dir", log_dir, *args, cwd=work)
        assert result.returncode == 0, result.stderr
        runs[script] = (run_name(result.stdout), result.stdout)
    result = run_in_process("UnitaryImageAugmentationSample.py", "--image", train_dir / "apple" / "apple_000.png",
                            "--output-dir", work / "copies", "--count", 5, "--log-dir", log_dir, cwd=work)
    assert result.returncode == 0, result.stderr
    runs["UnitaryImageAugmentationSample.py"] = (run_name(result.stdout), result.stdout)
    result = run_in_process("ClassImageAugmentationSample.py", "--train-dir", train_dir,
                            "--validation-dir", validation_dir, "--output-dir", work / "balanced",
                            "--train-target", 10, "--validation-target", 5, "--log-dir", log_dir, cwd=work)
    assert result.returncode == 0, result.stderr
    runs["ClassImageAugmentationSample.py"] = (run_name(result.stdout), result.stdout)
    return log_dir, runs


def run_name(stdout):
    """The run folder's name, from the 'TensorBoard run: logs/<name>' line a script prints."""
    match = re.search(r"^TensorBoard run: .*[/\\]([^/\\\n]+)$", stdout, re.MULTILINE)
    assert match, stdout
    return match.group(1)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class TensorBoardServer:
    """`tensorboard --logdir` on 127.0.0.1, read through its HTTP data API."""

    def __init__(self, log_dir):
        self.url = f"http://127.0.0.1:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(log_dir),
             "--host", "127.0.0.1", "--port", port, "--reload_interval", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def get(self, path, body=None):
        request = urllib.request.Request(
            self.url + path, data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            data = response.read()
        return json.loads(data) if response.headers.get_content_type() == "application/json" else data

    def wait_for(self, ready, timeout=180):
        """Poll until ready(self) is true: the server loads the logs in the background."""
        deadline, last_error = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.stdout.read()
            try:
                if ready(self):
                    return
            except (urllib.error.URLError, ConnectionError) as error:
                last_error = error  # not listening yet
            time.sleep(1)
        self.stop()
        raise AssertionError(f"TensorBoard at {self.url} did not serve the logs in {timeout} s "
                             f"(last error: {last_error}); it printed:\n{self.process.stdout.read()}")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def tensorboard(logs):
    log_dir, runs = logs
    server = TensorBoardServer(log_dir)
    try:
        first_model = runs["FirstModel.py"][0]
        # Ready when the last file written (the class balancer's images) and the scalars are loaded.
        server.wait_for(lambda server: runs["ClassImageAugmentationSample.py"][0]
                        in server.get("/data/plugin/images/tags")
                        and f"{first_model}/validation" in server.get("/data/plugin/scalars/tags"))
        yield server
    finally:
        server.stop()
    assert server.process.returncode is not None  # stopped


def test_serves_a_run_per_script_with_keras_scalars(tensorboard, logs):
    _, runs = logs
    served = tensorboard.get("/data/runs")
    for script in ("FirstModel", "SecondModel", "SVMModel"):
        name = runs[f"{script}.py"][0]
        assert re.fullmatch(fr"{script}-\d{{8}}-\d{{6}}", name)
        assert {name, f"{name}/train", f"{name}/validation"} <= set(served)
    scalar_tags = tensorboard.get("/data/plugin/scalars/tags")
    first_model = runs["FirstModel.py"][0]
    assert {"epoch_loss", "epoch_accuracy"} <= set(scalar_tags[f"{first_model}/train"])
    assert {"epoch_loss", "epoch_accuracy"} <= set(scalar_tags[f"{first_model}/validation"])


def test_serves_augmented_images_and_confusion_matrices(tensorboard, logs):
    _, runs = logs
    image_tags = tensorboard.get("/data/plugin/images/tags")
    first_model, second_model = runs["FirstModel.py"][0], runs["SecondModel.py"][0]
    validation_pictures = {"confusion_matrix", "misclassified_validation_images"}
    assert set(image_tags[first_model]) == {"augmented_training_images"} | validation_pictures
    assert set(image_tags[second_model]) == {"training_images"} | validation_pictures
    assert set(image_tags[runs["SVMModel.py"][0]]) == validation_pictures
    assert set(image_tags[runs["UnitaryImageAugmentationSample.py"][0]]) == {"before_and_after_augmentation"}
    assert set(image_tags[runs["ClassImageAugmentationSample.py"][0]]) == {
        "before_and_after_augmentation/train", "before_and_after_augmentation/validation"}

    # The confusion matrix every 10 epochs and after the last one (steps count epochs from 0).
    query = urllib.parse.urlencode({"run": first_model, "tag": "confusion_matrix"})
    matrices = tensorboard.get(f"/data/plugin/images/images?{query}")
    assert [matrix["step"] for matrix in matrices] == [9, FIRST_MODEL_EPOCHS - 1]
    picture = tensorboard.get(f"/data/plugin/images/individualImage?{matrices[-1]['query']}")
    assert picture.startswith(b"\x89PNG")

    # The mistakes beside it, at the same epochs: here the berry filed with the apples, in a
    # grid of 2 columns of 170 pixels, captioned with its classes and name.
    for run in (first_model, runs["SVMModel.py"][0]):
        query = urllib.parse.urlencode({"run": run, "tag": "misclassified_validation_images"})
        grids = tensorboard.get(f"/data/plugin/images/images?{query}")
        assert [grid["step"] for grid in grids] == ([9, FIRST_MODEL_EPOCHS - 1] if run == first_model else [0])
        png = tensorboard.get(f"/data/plugin/images/individualImage?{grids[-1]['query']}")
        with Image.open(io.BytesIO(png)) as grid:
            # Two columns: 340 pixels, which TensorBoard shows without shrinking the captions.
            assert grid.width == 2 * 170 and grid.height >= 170 + 3 * 17


def test_serves_per_class_report_and_class_weights(tensorboard, logs):
    _, runs = logs
    first_model, second_model = runs["FirstModel.py"][0], runs["SecondModel.py"][0]
    text_tags = tensorboard.get("/data/plugin/text/tags")
    assert set(text_tags[first_model]) == {"classification_report", "misclassified_validation_list"}
    assert set(text_tags[second_model]) == {"classification_report", "misclassified_validation_list",
                                            "class_weights"}
    query = urllib.parse.urlencode({"run": first_model, "tag": "misclassified_validation_list"})
    mistakes = tensorboard.get(f"/data/plugin/text/text?{query}")[-1]["text"]
    assert "filed_wrong.png" in mistakes and "apple" in mistakes and "berry" in mistakes

    query = urllib.parse.urlencode({"run": first_model, "tag": "classification_report"})
    report = tensorboard.get(f"/data/plugin/text/text?{query}")[-1]["text"]
    for header in ("precision", "recall", "support", "apple", "berry"):
        assert header in report
    query = urllib.parse.urlencode({"run": second_model, "tag": "class_weights"})
    weights = tensorboard.get(f"/data/plugin/text/text?{query}")[-1]["text"]
    # 8 apples and 4 berries: berries weigh twice as much.
    assert re.search(r"<td>apple</td>\s*<td>8</td>\s*<td>1\.000</td>", weights)
    assert re.search(r"<td>berry</td>\s*<td>4</td>\s*<td>2\.000</td>", weights)


def test_hparams_dashboard_compares_the_runs(tensorboard, logs):
    _, runs = logs
    experiment = tensorboard.get("/data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = {info["name"] for info in experiment["hparamInfos"]}
    assert {"script", "image_size", "batch_size", "epochs", "optimizer", "learning_rate",
            "conv_dropout", "dense_dropout", "rotation_range", "width_shift_range",
            "height_shift_range", "shear_range", "zoom_range", "horizontal_flip",
            "reduce_lr_patience", "early_stopping_patience", "class_weights", "train_dir",
            "images_per_class"} <= hparams
    metrics = {(info["name"]["group"], info["name"]["tag"]) for info in experiment["metricInfos"]}
    assert {("validation", "epoch_accuracy"), ("validation", "epoch_loss")} <= metrics

    groups = tensorboard.get("/data/plugin/hparams/session_groups", {
        "experimentName": "", "startIndex": 0, "sliceSize": 100, "colParams": [],
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]})
    # One trial per run, named after its folder.
    sessions = {group["name"]: group for group in groups["sessionGroups"]}
    first_model, first_stdout = runs["FirstModel.py"]
    second_model = runs["SecondModel.py"][0]
    svm_model = runs["SVMModel.py"][0]
    assert set(sessions) == {first_model, second_model, svm_model}
    assert sessions[first_model]["hparams"]["class_weights"] is False
    assert sessions[second_model]["hparams"]["class_weights"] is True
    assert sessions[first_model]["hparams"]["images_per_class"] == "apple 8, berry 4"
    assert sessions[first_model]["hparams"]["optimizer"] == "Adadelta"
    assert sessions[first_model]["hparams"]["rotation_range"] == 15
    assert sessions[second_model]["hparams"]["rotation_range"] == 0
    assert sessions[first_model]["hparams"]["epochs"] == FIRST_MODEL_EPOCHS
    # The last epoch's validation accuracy, as Keras printed it.
    epoch_lines = [line for line in first_stdout.splitlines() if "/step - " in line]
    final_accuracy = float(re.search(r"val_accuracy: ([0-9.]+)", epoch_lines[-1]).group(1))
    values = {(metric["name"]["group"], metric["name"]["tag"]): metric["value"]
              for metric in sessions[first_model]["metricValues"]}
    assert values[("validation", "epoch_accuracy")] == pytest.approx(final_accuracy, abs=1e-4)
    # The SVM's validation accuracy sits in the same column.
    svm_values = {(metric["name"]["group"], metric["name"]["tag"]): metric["value"]
                  for metric in sessions[svm_model]["metricValues"]}
    assert 0 <= svm_values[("validation", "epoch_accuracy")] <= 1


def test_report_counts_right():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predictions = np.array([0, 0, 1, 1, 1, 1])
    report = reports.report_table(labels, predictions, ["ant", "bee", "cat"]).splitlines()
    assert report[2] == "| ant | 1.000 | 0.667 | 3 |"
    assert report[3] == "| bee | 0.500 | 1.000 | 2 |"
    assert report[4] == "| cat | n/a | 0.000 | 1 |"  # never predicted: no precision
    assert report[5] == "| all: accuracy 0.667 | | | 6 |"


def test_pictures_fit_their_content():
    counts = np.array([[5, 1], [0, 6]])
    two_classes = reports.draw_confusion_matrix(counts, ["ant", "bee"], "after epoch 1")
    long_names = reports.draw_confusion_matrix(counts, ["a" * 40, "b" * 40], "after epoch 1")
    assert two_classes.mode == "RGB" and long_names.width > two_classes.width
    tiles = [Image.new("RGB", size) for size in ((30, 20), (300, 600), (32, 32))]
    grid = reports.picture_grid(tiles, ["wide", "tall", "square"], columns=2, tile=100)
    assert grid.size == (200, 2 * (100 + 17 + 6))
    # Captions of several lines make the rows taller, not the letters smaller.
    grid = reports.picture_grid(tiles, ["a\nb\nc", "tall", "square"], columns=3, tile=100)
    assert grid.size == (300, 100 + 3 * 17 + 6)


def test_no_mistake_is_said_not_drawn_as_an_empty_grid(tmp_path):
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    reports.log_validation(str(tmp_path), images, np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]),
                           ["a/1.png", "b/2.png"], ["a", "b"], "after epoch 1", 0)
    events = EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
    events.Reload()
    [event] = events.Tensors("misclassified_validation_images")
    width, height = (int(value) for value in event.tensor_proto.string_val[:2])
    assert (width, height) == (340, 60)  # a line of text, not a grid of pictures
