"""The compositional split: three-object requests that never occur in train.json, and as many that do
(:func:`condgen.data.splits.compositional_split`).

A model that only memorised the training combinations scores lower on the first file than on the second; top-k
accuracy and the exact-set rate on both go beside test.json and new_test.json in the benchmarks. Hyper-parameters
may be chosen on these files (they come from train.json's vocabulary, not from the test files).

unseen_tune.json and unseen_goal.json halve the unseen requests: settings may be chosen on the first, the second only
scores them.

Run by hand (writes the four files to benchmarks/labels/; --check verifies them):
    python benchmarks/compositional.py [--data ../shared/iclevr] [--seed 0] [--check] [--out benchmarks/labels]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from condgen.data.splits import compositional_split

ROOT = Path(__file__).resolve().parents[1]
FILES = {
    "unseen": "unseen_triples.json",
    "seen": "seen_triples.json",
    "unseen_tune": "unseen_tune.json",
    "unseen_goal": "unseen_goal.json",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "iclevr")
    parser.add_argument("--seed", type=int, default=0, help="which seen triples are drawn (default 0)")
    parser.add_argument("--check", action="store_true", help="verify the committed files instead of writing them")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "labels", help="folder of the files (benchmarks/labels)"
    )
    args = parser.parse_args()
    split = compositional_split(args.data, args.seed)
    for name, file in FILES.items():
        path, text = args.out / file, json.dumps(split[name]) + "\n"
        if args.check:
            if not path.is_file() or path.read_text() != text:
                print(f"{path}: differs from what {args.data} and seed {args.seed} give", file=sys.stderr)
                return 1
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        print(f"{path}: {len(split[name])} {name.replace('_', ' ')} three-object requests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
