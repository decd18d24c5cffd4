"""Runs started side by side, as a sweep in a shell loop with '&' starts them, keep apart."""

import concurrent.futures
import os
import signal
import subprocess
import sys
import threading

import keras
import pytest

import image_files
from helpers import REPO, check_partial_set, make_images, saved_epoch, set_mark, start_script, stop_at_line


def test_runs_in_the_same_second_get_folders_of_their_own(tmp_path, monkeypatch):
    monkeypatch.setattr(image_files.time, "strftime", lambda format: "20261126-120000")
    log_dir = str(tmp_path / "logs")
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        folders = list(pool.map(lambda _: image_files.new_run_folder(log_dir, "FirstModel"), range(8)))
    stamp = os.path.join(log_dir, "FirstModel-20261126-120000")
    assert sorted(folders) == sorted([stamp] + [f"{stamp}-{number}" for number in range(2, 9)])
    assert all(os.listdir(folder) == [] for folder in folders)


def test_two_runs_started_at_once_log_in_two_folders(tmp_path):
    make_images(tmp_path, {"cat": 1})
    processes = [subprocess.Popen(
        [sys.executable, str(REPO / "UnitaryImageAugmentationSample.py"), "--image",
         tmp_path / "cat" / "cat_000.png", "--count", "2", "--output-dir", tmp_path / "out",
         "--log-dir", tmp_path / "logs"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)]
    for process in processes:
        assert process.wait(timeout=300) == 0, process.stderr.read()
    runs = list((tmp_path / "logs").iterdir())
    assert len(runs) == 2
    assert all(len(list(run.glob("events.out.tfevents.*"))) == 1 for run in runs)
    assert len(list((tmp_path / "out").iterdir())) == 4


def run_closing_its_terminal(command, cwd, at):
    """Run command in a terminal of its own (a pty), and close the terminal, as a user closes the
    window, when it shows `at`: the exit status."""
    import pty

    pid, terminal = pty.fork()
    if pid == 0:  # the script, in its terminal
        try:
            os.chdir(cwd)
            os.execv(command[0], command)
        finally:
            os._exit(1)
    watchdog = threading.Timer(600, os.kill, (pid, signal.SIGKILL))  # never wait for ever
    watchdog.start()
    try:
        shown = b""
        while at not in shown:
            shown += os.read(terminal, 4096)
        os.close(terminal)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    finally:
        watchdog.cancel()


@pytest.mark.skipif(os.name == "nt", reason="a terminal that hangs up is a POSIX matter")
def test_two_runs_stopped_side_by_side_keep_both_partial_sets(tmp_path):
    """Two runs started together, saving to one --model-file: one stopped by `kill` (SIGTERM), the
    other by closing its terminal window (SIGHUP, then every write to the terminal fails). Each
    keeps its complete epochs in a set of its own, with the status a shell expects."""
    train_dir = make_images(tmp_path / "train", {"apple": 12, "berry": 12}, seed=1)
    validation_dir = make_images(tmp_path / "validation", {"apple": 3, "berry": 3}, seed=2)
    arguments = ["--train-dir", train_dir, "--validation-dir", validation_dir, "--image-size", 24, "--epochs", 6,
                 "--log-dir", tmp_path / "logs", "--model-file", tmp_path / "model.h5"]
    killed = start_script("SecondModel.py", *arguments, "--seed", 1, cwd=tmp_path)
    in_a_terminal = [sys.executable, str(REPO / "SecondModel.py"), *map(str, arguments), "--seed", "2"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as watchers:  # each stopped as it reaches epoch 3
        killed_result = watchers.submit(stop_at_line, killed, "Epoch 3/", signal.SIGTERM)
        hung_up_status = watchers.submit(run_closing_its_terminal, in_a_terminal, tmp_path, b"Epoch 3/")
        killed_result, hung_up_status = killed_result.result(), hung_up_status.result()

    command, killed_file, completed = check_partial_set(killed_result, "SIGTERM", tmp_path / "model.h5")
    assert command[command.index("--model-file") + 1] == str(killed_file)
    assert command[command.index("--initial-epoch") + 1] == str(completed)
    assert hung_up_status == 128 + signal.SIGHUP
    last_files = sorted(tmp_path.glob("model.partial-*.last.h5"))
    assert len(last_files) == 2  # one set each, neither replacing the other
    for last_file in last_files:
        partial_file = str(last_file).replace(".last.h5", ".h5")
        assert set_mark(partial_file) == set_mark(last_file) is not None
        assert saved_epoch(last_file) >= 2
        assert keras.models.load_model(last_file).input_shape == (None, 24, 24, 3)
    assert not (tmp_path / "model.h5").exists()
    assert len(list((tmp_path / "logs").iterdir())) == 2  # and a TensorBoard run each
