"""TransferModel.py's two stages in this process, on the stand-in weights (keras_home): what stage 2
trains, and the TensorBoard run. Going on from a finished run in stage 1 is in test_transfer_model.py,
from a stopped one in either stage in test_checkpoints.py."""

import re

import keras
import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import (FINAL_LINE, MOBILENET_WEIGHTS, logged_scalars, optimizer_iterations, run_transfer, saved_epoch,
                     stderr_lines)


def test_stage_two_trains_the_last_block(keras_home, colours, tmp_path):
    """Stage 1's 3 epochs, then stage 2's 2 (a stop in stage 2 and the run going on are in test_checkpoints.py)."""
    weights = keras_home / "models" / MOBILENET_WEIGHTS
    finished = run_transfer(colours, tmp_path, "--weights", weights, "--epochs", 5)
    assert finished.returncode == 0, finished.stderr
    assert stderr_lines(finished) == []
    assert "Epoch 3/3" in finished.stdout and "Epoch 5/5" in finished.stdout  # stage 1, then stage 2
    last_file = tmp_path / "transfer.last.h5"
    # 36 training images at batch size 8: 5 steps an epoch.
    assert saved_epoch(last_file) == 5 and optimizer_iterations(last_file) == 10
    val_accuracy = float(FINAL_LINE.match(finished.stdout.strip().splitlines()[-1]).group(4))
    assert val_accuracy > 0.5  # three classes: chance is a third

    # Stage 2 trained the last block's convolutions; nothing else, not even its batch normalisation's statistics.
    started = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=str(weights))
    trained = keras.models.load_model(last_file).get_layer("base")
    changed = {layer.name for layer, before in zip(trained.layers, started.layers)
               if any(not np.array_equal(now, then) for now, then in zip(layer.get_weights(), before.get_weights()))}
    assert changed == {"block_16_expand", "block_16_depthwise", "block_16_project", "Conv_1"}

    # One TensorBoard run, the epochs of both stages numbered on, its settings and pictures.
    [run] = (tmp_path / "logs").iterdir()
    assert re.fullmatch(r"TransferModel-\d{8}-\d{6}", run.name)
    assert sorted(logged_scalars(run / "validation")["epoch_accuracy"]) == [0, 1, 2, 3, 4]
    events = EventAccumulator(str(run), size_guidance={"tensors": 0})
    events.Reload()
    assert {"_hparams_/session_start_info", "augmented_training_images", "confusion_matrix",
            "misclassified_validation_images", "classification_report"} <= set(events.Tags()["tensors"])
    settings = events.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    assert b"MobileNetV2" in settings and b"block_16_expand" in settings
