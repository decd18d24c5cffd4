"""Output that can no longer be written, and hang-ups a run was told to ignore: a training run goes on
and saves every epoch; --predict and --check-labels into a closed pipe end quietly, as `| head` expects."""

import errno
import io
import os
import signal

import pytest

import reports
from helpers import make_images, run_in_process, save_model, saved_epoch

POSIX_ONLY = pytest.mark.skipif(os.name == "nt", reason="no SIGHUP or SIGPIPE on Windows")


class PipeClosedAfter(io.StringIO):
    """Standard output piped into `head -n lines`: a broken pipe once head has its lines and ends."""

    def __init__(self, lines):
        super().__init__()
        self.lines = lines

    def write(self, text):
        if self.getvalue().count("\n") >= self.lines:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")
        return super().write(text)


@POSIX_ONLY
@pytest.mark.parametrize("script, arguments", [
    ("FirstModel.py", ["--predict", "validation", "--model-file", "first.h5"]),
    ("SVMModel.py", ["--check-labels", "--train-dir", "train"]),
])
def test_a_pipe_closed_by_its_reader_ends_predict_and_check_labels_quietly(script, arguments, small_dataset,
                                                                             tmp_path):
    if script == "FirstModel.py":  # a model to predict with, untrained
        import FirstModel
        save_model(FirstModel.build_model(32, 2), tmp_path / "first.h5", ["apple", "berry"], 1)
    result = run_in_process(script, *arguments, cwd=tmp_path, stdout=PipeClosedAfter(1))
    assert result.returncode == 128 + signal.SIGPIPE  # ended by SIGPIPE, as `yes | head` ends
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 1


class PipeClosedAtEpoch1(io.StringIO):
    """Standard output piped into `tee`, which a closed terminal ends as the first epoch starts."""

    def write(self, text):
        if "Epoch 1/" in self.getvalue():
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")
        return super().write(text)


@POSIX_ONLY
def test_under_nohup_a_hang_up_and_a_closed_pipe_do_not_stop_training(tmp_path, monkeypatch):
    """`nohup python FirstModel.py | tee log`, then the terminal closed: tee ends, the run's output can no longer be
    written, and the run, told to ignore SIGHUP, trains on and saves every epoch."""
    make_images(tmp_path / "train", {"apple": 8, "berry": 8}, seed=1)
    make_images(tmp_path / "validation", {"apple": 2, "berry": 2}, seed=2)
    epoch_end = reports.ValidationReport.on_epoch_end

    def hang_up_as_the_first_epoch_ends(self, epoch, logs=None):
        epoch_end(self, epoch, logs)
        if epoch == 0:
            signal.raise_signal(signal.SIGHUP)

    monkeypatch.setattr(reports.ValidationReport, "on_epoch_end", hang_up_as_the_first_epoch_ends)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup starts the run
    result = run_in_process("FirstModel.py", "--train-dir", "train", "--validation-dir", "validation", "--epochs", 4,
                            "--batch-size", 2, "--image-size", 32, "--log-dir", "logs", "--model-file", "model.h5",
                            cwd=tmp_path, stdout=PipeClosedAtEpoch1())
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "Epoch 2/" not in result.stdout
    assert saved_epoch(tmp_path / "model.last.h5") == 4
    assert not (tmp_path / "model.checkpoint.h5").exists()
