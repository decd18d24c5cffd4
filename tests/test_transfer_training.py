"""TransferModel.py's two stages in this process, on the stand-in weights (keras_home): what stage 2
trains, a stop in it and the run going on, and the TensorBoard run. Resuming in stage 1 is in
test_transfer_model.py."""

import re
import signal

import keras
import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import keras_tools
from helpers import (FINAL_LINE, MOBILENET_WEIGHTS, check_partial_set, logged_scalars, optimizer_iterations,
                     run_in_process, run_transfer, saved_epoch, stderr_lines)


def test_stage_two_trains_the_last_block_and_a_stop_in_it_goes_on(keras_home, photos, tmp_path, monkeypatch):
    """Stage 1's 3 epochs, stage 2's first, then Ctrl-C in stage 2's second; the printed command
    finishes the run."""
    weights = keras_home / "models" / MOBILENET_WEIGHTS
    batch_end = keras_tools.StopOnCtrlC.on_train_batch_end

    def ctrl_c_in_the_second_epoch_of_stage_two(self, batch, logs=None):
        if self.model.name != "classifier" and self.completed_epochs == 4:
            signal.raise_signal(signal.SIGINT)
        batch_end(self, batch, logs)

    monkeypatch.setattr(keras_tools.StopOnCtrlC, "on_train_batch_end", ctrl_c_in_the_second_epoch_of_stage_two)
    result = run_transfer(photos, tmp_path, "--weights", weights, "--epochs", 5)
    assert "Epoch 3/3" in result.stdout and "Epoch 4/5" in result.stdout  # stage 1, then stage 2
    go_on, partial_file, completed = check_partial_set(result, "SIGINT", tmp_path / "transfer.h5", epochs=5)
    assert completed == 4
    partial_last = str(partial_file).replace(".h5", ".last.h5")
    # 36 training images at batch size 8: 5 steps in stage 2's one complete epoch.
    assert optimizer_iterations(partial_last) == 5
    monkeypatch.undo()

    # Stage 2 trained the last block's convolutions; nothing else, not even its batch normalisation's statistics.
    started = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=str(weights))
    trained = keras.models.load_model(partial_last).get_layer("base")
    changed = {layer.name for layer, before in zip(trained.layers, started.layers)
               if any(not np.array_equal(now, then) for now, then in zip(layer.get_weights(), before.get_weights()))}
    assert changed == {"block_16_expand", "block_16_depthwise", "block_16_project", "Conv_1"}

    # One TensorBoard run, the epochs of both stages numbered on, its settings and pictures.
    [run] = (tmp_path / "logs").iterdir()
    assert re.fullmatch(r"TransferModel-\d{8}-\d{6}", run.name)
    assert sorted(logged_scalars(run / "validation")["epoch_accuracy"]) == [0, 1, 2, 3]
    events = EventAccumulator(str(run), size_guidance={"tensors": 0})
    events.Reload()
    assert {"_hparams_/session_start_info", "augmented_training_images", "confusion_matrix",
            "misclassified_validation_images", "classification_report"} <= set(events.Tags()["tensors"])
    settings = events.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    assert b"MobileNetV2" in settings and b"block_16_expand" in settings

    # The printed command resumes in stage 2: no features, and the optimizer goes on from its 5 steps.
    assert go_on[go_on.index("--initial-epoch") + 1] == "4"
    finished = run_in_process("TransferModel.py", *go_on[2:], cwd=tmp_path,
                              constants={"FEATURE_EPOCHS": 3, "FEATURE_LEARNING_RATE": 0.1})
    assert finished.returncode == 0, finished.stderr
    assert stderr_lines(finished) == []
    assert "features of" not in finished.stdout and "Epoch 5/5" in finished.stdout
    assert saved_epoch(partial_last) == 5 and optimizer_iterations(partial_last) == 10
    val_accuracy = float(FINAL_LINE.match(finished.stdout.strip().splitlines()[-1]).group(4))
    assert val_accuracy > 0.5  # three classes: chance is a third
