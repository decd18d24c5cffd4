"""How many wrong labels --check-labels finds: plant some in a copy of a real training set.

    python tests/benchmarks/planted_labels.py --data flowers4 --model SVMModel
    python tests/benchmarks/planted_labels.py --data sign_digits4 --model FirstModel --seed 1

Copies ../shared/datasets/<data>/train to a temporary folder, moves PLANTED images picked at
random (with --seed) each to another class picked at random, runs the script's
--check-labels on the copy as a user would, and prints how many of the planted images are
among the first 20 suspects, and where each one ranks. docs/mistakes.md quotes the figures.
"""

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA_SETS = {name: REPO.parent / "shared" / "datasets" / name for name in ("sign_digits4", "flowers4")}
PLANTED = 10
TOP = 20


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=DATA_SETS, required=True)
    parser.add_argument("--model", choices=("SVMModel", "FirstModel", "SecondModel"), required=True)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if not DATA_SETS[args.data].is_dir():
        print(f"skipped: {DATA_SETS[args.data]} is not there")
        return
    with tempfile.TemporaryDirectory() as work:
        train_dir = Path(work) / "train"
        shutil.copytree(DATA_SETS[args.data] / "train", train_dir)
        rng = random.Random(args.seed)
        classes = sorted(path.name for path in train_dir.iterdir() if path.is_dir())
        images = sorted(path for path in train_dir.rglob("*") if path.is_file())
        planted = {}
        for image in rng.sample(images, PLANTED):
            target = rng.choice([name for name in classes if name != image.parent.name])
            moved = train_dir / target / f"planted_{image.name}"
            shutil.move(image, moved)
            planted[str(moved)] = image.parent.name
        started = time.perf_counter()
        result = subprocess.run([sys.executable, str(REPO / f"{args.model}.py"), "--check-labels",
                                 "--train-dir", str(train_dir), "--seed", str(args.seed)],
                                capture_output=True, text=True, cwd=work)
        minutes = (time.perf_counter() - started) / 60
        if result.returncode:
            sys.exit(result.stderr)
        suspects = [line.split("\t")[0] for line in result.stdout.splitlines() if "\t" in line]
        ranks = sorted(suspects.index(path) + 1 for path in planted if path in suspects)
        found = sum(rank <= TOP for rank in ranks)
        print(f"{args.data} {args.model} seed {args.seed}: {found} of {PLANTED} planted labels in the "
              f"first {TOP} of {len(suspects)} suspects (ranks {ranks}; {minutes:.1f} min)")


if __name__ == "__main__":
    main()
