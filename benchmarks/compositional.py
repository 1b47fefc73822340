"""The compositional split: three-object requests that never occur in train.json, and as many that do.

A model that only memorised the training combinations scores lower on the first file than on the second; top-k
accuracy and the exact-set rate on both go beside test.json and new_test.json in the benchmarks. Hyper-parameters
may be chosen on these files (they come from train.json's vocabulary, not from the test files).

Run by hand (writes benchmarks/labels/unseen_triples.json and seen_triples.json; --check verifies them):
    python benchmarks/compositional.py [--data ../shared/iclevr] [--seed 0] [--check]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch

from condgen.data.jsonio import read_json

ROOT = Path(__file__).resolve().parents[1]
LABELS = ROOT / "benchmarks" / "labels"
SPLIT = {"unseen": LABELS / "unseen_triples.json", "seen": LABELS / "seen_triples.json"}


def triples(data: Path, seed: int) -> dict[str, list[list[str]]]:
    """Every three-object set absent from ``data``'s train.json (in objects.json order), and as many sets present
    there, drawn with a permutation seeded by ``seed``."""
    objects = read_json(data / "objects.json")
    names = sorted(objects, key=objects.get)
    seen = {frozenset(lists) for lists in read_json(data / "train.json").values() if len(set(lists)) == 3}
    combinations = [list(c) for c in itertools.combinations(names, 3)]
    unseen = [c for c in combinations if frozenset(c) not in seen]
    present = [c for c in combinations if frozenset(c) in seen]
    order = torch.randperm(len(present), generator=torch.Generator().manual_seed(seed))[: len(unseen)]
    return {"unseen": unseen, "seen": [present[i] for i in sorted(order.tolist())]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "iclevr")
    parser.add_argument("--seed", type=int, default=0, help="which seen triples are drawn (default 0)")
    parser.add_argument("--check", action="store_true", help="verify the committed files instead of writing them")
    args = parser.parse_args()
    split = triples(args.data, args.seed)
    for name, path in SPLIT.items():
        text = json.dumps(split[name]) + "\n"
        if args.check:
            if not path.is_file() or path.read_text() != text:
                print(f"{path}: differs from what {args.data} and seed {args.seed} give", file=sys.stderr)
                return 1
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        print(f"{path}: {len(split[name])} {name} three-object requests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
