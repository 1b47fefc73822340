"""Ship a model inside the package: `condgen export` (every option after `--`) writes a fresh model folder, which then
replaces condgen/pretrained/NAME, the paths its run.json files record made relative to the repository's folder.

Run by hand from the repository root, after the benchmark that trained the run:
    python benchmarks/ship.py --name iclevr-ldm -- --run runs/bench_ldm --ranker runs/bench_ranker \\
        --result benchmarks/results/latent_ranker_ship_cpu.json --half auto
    python benchmarks/ship.py --name iclevr-gan -- --run runs/bench_gan_latent_hinge_s2d_bf16_third \\
        --result benchmarks/results/gan_cpu.json --entry latent_hinge_s2d_bf16_third_best_of_16 --half auto
A shipped folder given as --run is stored again under the current layout and card, keeping its origin.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from condgen.cli import export_options
from condgen.export import export
from condgen.files import staged_folder
from condgen.parser import build_parser
from condgen.pretrained import PRETRAINED

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="the shipped model's name, e.g. iclevr-ldm")
    parser.add_argument("export", nargs=argparse.REMAINDER, help="-- then `condgen export`'s options but --out")
    args = parser.parse_args(argv)
    rest = args.export[1:] if args.export[:1] == ["--"] else args.export
    command = shlex.join(["python", "benchmarks/ship.py", *argv])
    target = PRETRAINED / args.name
    with tempfile.TemporaryDirectory() as scratch:  # export refuses to write inside the package itself
        exported = Path(scratch) / args.name
        options = build_parser().parse_args(["export", *rest, "--out", str(exported)])
        export(options.run, exported, export_options(options), command, args.name)
        relative_sources(exported)
        with staged_folder(target) as staging:  # replaces the shipped folder whole, or leaves it as it was
            shutil.copytree(exported, staging, dirs_exist_ok=True)
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    print(f"wrote {target} ({size / 1e6:.1f} MB)")


def relative_sources(folder: Path) -> None:
    """Where the folder came from, relative to the folder holding the repository, in its run.json files."""
    for meta_file in folder.rglob("run.json"):
        meta = json.loads(meta_file.read_text())
        for key in ("exported_from", "data", "autoencoder"):
            if isinstance(meta.get(key), str) and Path(meta[key]).is_absolute():
                path = Path(meta[key]).resolve()
                meta[key] = str(path.relative_to(ROOT.parent)) if path.is_relative_to(ROOT.parent) else path.name
        meta_file.write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
