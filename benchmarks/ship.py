"""Ship a model inside the package: `condgen export` (every option after `--`) writes a fresh model folder, which then
replaces condgen/pretrained/NAME, the paths its run.json files record made relative to the repository's folder.

Run by hand from the repository root, after the benchmark that trained the run:
    python benchmarks/ship.py --name iclevr-ldm -- --run runs/bench_ldm --ranker runs/bench_ranker \\
        --result benchmarks/results/latent_ranker_ship_cpu.json --half auto
    python benchmarks/ship.py --name iclevr-gan --share-rankers-with iclevr-ldm -- \\
        --run runs/bench_gan_latent_hinge_s2d_bf16_third --ranker condgen/pretrained/iclevr-ldm/ranker.safetensors \\
        --ranker-counter condgen/pretrained/iclevr-ldm/ranker_counter.safetensors --ranker-bits 7 \\
        --result benchmarks/results/gan_train_lists_cpu.json \\
        --entry latent_hinge_s2d_bf16_third_best_of_128_ranked --half auto
A shipped folder given as --run is stored again under the current layout and card, keeping its origin.
--share-rankers-with NAME stores the exported ranker (and counter, where it has one) once: where they are byte for
byte the shipped model NAME's, the folder keeps a rankers.json that points to NAME's instead of a second copy in the
wheel.
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
from condgen.evaluate.ranker import RANKER_COUNTER_FILE, RANKER_FILE, SHARED_RANKERS_FILE
from condgen.export import export
from condgen.files import staged_folder
from condgen.parser import build_parser
from condgen.pretrained import PRETRAINED

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="the shipped model's name, e.g. iclevr-ldm")
    parser.add_argument(
        "--share-rankers-with", metavar="NAME", help="a shipped model whose identical ranker and counter to point to"
    )
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
        if args.share_rankers_with:
            share_rankers(exported, args.share_rankers_with)
        with staged_folder(target) as staging:  # replaces the shipped folder whole, or leaves it as it was
            shutil.copytree(exported, staging, dirs_exist_ok=True)
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    print(f"wrote {target} ({size / 1e6:.1f} MB)")


def share_rankers(folder: Path, name: str, shelf: Path = PRETRAINED) -> None:
    """Replaces ``folder``'s ranker, and its counter where it has one, by a rankers.json that points to those of
    ``name``, the model folder beside it on ``shelf`` (the shipped models), which must hold the same bytes; the card
    says so. A folder without a counter ranks with the ranker alone, and its pointer says so."""
    source = shelf / name
    shared = [RANKER_FILE] + ([RANKER_COUNTER_FILE] if (folder / RANKER_COUNTER_FILE).is_file() else [])
    for file in shared:
        mine, theirs = folder / file, source / file
        if not (mine.is_file() and theirs.is_file() and mine.read_bytes() == theirs.read_bytes()):
            raise SystemExit(f"--share-rankers-with {name}: the exported {file} is not byte for byte {source / file}")
    for file in shared:
        (folder / file).unlink()
    pointer = {"folder": f"../{name}"} | ({} if RANKER_COUNTER_FILE in shared else {"counter": False})
    (folder / SHARED_RANKERS_FILE).write_text(json.dumps(pointer) + "\n")
    files = " and ".join(f"`{file}`" for file in shared)
    are, they, the_files = ("are", "they were", "the files") if len(shared) > 1 else ("is", "it was", "the file")
    with (folder / "README.md").open("a") as card:
        card.write(
            f"\nIts {files} {are} stored once in the package, in `{name}`'s folder, which `{SHARED_RANKERS_FILE}` "
            f"names and whose card says how {they} trained: byte for byte {the_files} this card describes.\n"
        )


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
