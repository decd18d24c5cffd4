"""--export on the bundled set and on real photos: a measurement.

    KERAS_HOME=/tmp/keras python tests/benchmarks/export.py OUT_DIR

For each photo set and each of FirstModel and TransferModel, trains the script with its defaults into
OUT_DIR/<set>-<script>/ (unless a model is there already), then runs `--export` twice in new processes:
as a user does (its parity report is printed, with the time it took), and with TensorFlow held to one
thread (TF_NUM_INTRAOP_THREADS=1, read once as TensorFlow starts), for the Keras model's milliseconds
per photo with 1 thread. $KERAS_HOME/models must hold MobileNetV2's ImageNet weights (here the
stand-in from ../shared/weights): nothing is downloaded. docs/export.md says what came out.
"""

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA_SETS = {"bundled": REPO / "data", "sign_digits4": REPO.parent / "shared" / "datasets" / "sign_digits4",
             "flowers4": REPO.parent / "shared" / "datasets" / "flowers4"}
SCRIPTS = ("FirstModel", "TransferModel")


def run(script, data_dir, model_file, *flags, env=None):
    """The script in a new process on data_dir's train/ and validation/: its stdout; its error ends the benchmark."""
    result = subprocess.run([sys.executable, str(REPO / f"{script}.py"), "--train-dir", str(data_dir / "train"),
                             "--validation-dir", str(data_dir / "validation"), "--model-file", str(model_file),
                             *flags], capture_output=True, text=True, env=env, cwd=model_file.parent)
    if result.returncode:
        sys.exit(f"{script} failed: {result.stderr.strip()}")
    return result.stdout


def main():
    out_dir = Path(sys.argv[1]).resolve()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for set_name, data_dir in DATA_SETS.items():
        if not data_dir.is_dir():
            print(f"skipped {set_name}: {data_dir} is not there")
            continue
        for script in SCRIPTS:
            folder = out_dir / f"{set_name}-{script}"
            folder.mkdir(parents=True, exist_ok=True)
            model_file = folder / f"{script}.h5"
            if not model_file.exists():
                run(script, data_dir, model_file, "--log-dir", str(folder / "logs"))
            started = time.perf_counter()
            report = run(script, data_dir, model_file, "--export")
            seconds = time.perf_counter() - started
            one_thread = run(script, data_dir, model_file, "--export", env=dict(os.environ, TF_NUM_INTRAOP_THREADS="1"))
            keras_row = next(line for line in one_thread.splitlines()
                             if line.startswith(f"{script}.h5 ") and "exported" not in line)
            print(f"\n{set_name}, {script}: --export took {seconds:.1f} s (a new process, photos read, both files "
                  f"converted and compared)\n{report.split(chr(10), 1)[1]}"
                  f"Keras with 1 thread: {keras_row.split()[-1]} ms a photo")


if __name__ == "__main__":
    main()
