"""Runs started side by side, as a sweep in a shell loop with '&' starts them, keep apart (runs
stopped side by side: test_stopped_runs.py)."""

import concurrent.futures
import os
import subprocess
import sys

import reports
from helpers import REPO, make_images


def test_runs_in_the_same_second_get_folders_of_their_own(tmp_path, monkeypatch):
    monkeypatch.setattr(reports.time, "strftime", lambda format: "20261126-120000")
    log_dir = str(tmp_path / "logs")
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        folders = list(pool.map(lambda _: reports.new_run_folder(log_dir, "FirstModel"), range(8)))
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
