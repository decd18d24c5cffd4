"""What saving the run's state after every epoch costs: each model script's default run on the bundled
set, the time spent in its checkpoint's saves (training.Checkpoint.on_epoch_end: the weights, the
optimizer's state, the kept epoch's weights that differ from the last, flushed to disk and renamed
into place) against the run's whole time. A measurement, not a test: it prints figures.

    python tests/benchmarks/checkpoint_cost.py                      # FirstModel, SecondModel, TransferModel
    python tests/benchmarks/checkpoint_cost.py --scripts TransferModel

TransferModel needs MobileNetV2's ImageNet weights in Keras' cache ($KERAS_HOME/models): nothing is
downloaded; it is skipped without them.
"""

import argparse
import contextlib
import os
import runpy
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import runs  # noqa: E402

runs.start("checkpoint_cost.py")  # TensorFlow without its start-up lines

import training  # noqa: E402

WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def measure(script, work):
    """(seconds of the whole run, seconds in the saves, number of saves, checkpoint size in MB) of script's default run."""
    saves, sizes, on_epoch_end = [], [], training.Checkpoint.on_epoch_end

    def timed(self, epoch, logs=None):
        started = time.perf_counter()
        on_epoch_end(self, epoch, logs)
        saves.append(time.perf_counter() - started)
        sizes.append(os.path.getsize(self.path))

    training.Checkpoint.on_epoch_end = timed
    sys.argv = [str(REPO / f"{script}.py"), "--log-dir", str(work / "logs"), "--model-file", str(work / f"{script}.h5")]
    started = time.perf_counter()
    try:
        with open(work / "output.txt", "w") as output, contextlib.redirect_stdout(output):
            runpy.run_path(str(REPO / f"{script}.py"), run_name="__main__")
    except SystemExit as end:
        if end.code:
            raise
    finally:
        training.Checkpoint.on_epoch_end = on_epoch_end
    return time.perf_counter() - started, sum(saves), len(saves), max(sizes) / 1e6


def main():
    parser = argparse.ArgumentParser(description="The per-epoch save's share of each model script's default run.")
    parser.add_argument("--scripts", nargs="+", default=["FirstModel", "SecondModel", "TransferModel"])
    args = parser.parse_args()
    os.chdir(REPO)  # the scripts' defaults: data/train and data/validation
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    print("script         run s  saves  saves s  per save ms  share  checkpoint MB", flush=True)
    for script in args.scripts:
        if script == "TransferModel" and not (keras_home / "models" / WEIGHTS).is_file():
            print(f"{script}: skipped, no {keras_home / 'models' / WEIGHTS}")
            continue
        with tempfile.TemporaryDirectory() as work:
            seconds, saving, count, size = measure(script, Path(work))
        print(f"{script:13} {seconds:6.1f} {count:6d} {saving:8.2f} {1000 * saving / count:12.1f} "
              f"{saving / seconds:6.1%} {size:14.1f}", flush=True)


if __name__ == "__main__":
    main()
