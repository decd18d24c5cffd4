"""Runs started side by side, as a sweep in a shell loop with '&' starts them, keep apart (two runs on
one model file: test_checkpoints.py)."""

import concurrent.futures
import os

import reports


def test_runs_in_the_same_second_get_folders_of_their_own(tmp_path, monkeypatch):
    monkeypatch.setattr(reports.time, "strftime", lambda format: "20261126-120000")
    log_dir = str(tmp_path / "logs")
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        folders = list(pool.map(lambda _: reports.new_run_folder(log_dir, "FirstModel"), range(8)))
    stamp = os.path.join(log_dir, "FirstModel-20261126-120000")
    assert sorted(folders) == sorted([stamp] + [f"{stamp}-{number}" for number in range(2, 9)])
    assert all(os.listdir(folder) == [] for folder in folders)
