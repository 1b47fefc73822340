"""``condgen report``: measure every given run or model folder the same way (:mod:`condgen.report.measure`), cache
each model-and-sampler result, and write report.md, report.html and the figures (:mod:`condgen.report.render`)."""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import shutil
import time
from importlib import resources
from pathlib import Path

import torch

from condgen.data.iclevr import cache_dir, load_dataset, load_label_file
from condgen.data.imageio import to_signed
from condgen.data.jsonio import write_json
from condgen.errors import CondgenError
from condgen.evaluate.counter import SHIPPED_COUNTER, real_image_ceiling
from condgen.evaluate.evaluator import Evaluator, load_evaluator
from condgen.pipeline import Pipeline
from condgen.pretrained import ICLEVR_LABELS, model_path
from condgen.progress import progress_bar
from condgen.report import measure, render
from condgen.report.measure import GAN_PASS, SAMPLERS, Model
from condgen.train.config import config_to_dict
from condgen.viz.grid import save_grid

FORMAT = 3  # of a cached result; a new one makes old entries miss (3: the object counter's figures)
REAL_IMAGES = 2048  # real images the Fréchet distance compares with
FEATURES = 512  # the evaluator's feature dimension: fewer generated images leave the covariance rank-deficient
DIVERSITY_SEEDS = 8


def report_command(args: argparse.Namespace) -> Path:
    """Measures ``args.runs`` and writes ``args.out``/report.md, report.html and the figures; returns report.md."""
    wanted = [s.strip() for s in args.samplers.split(",")]
    unknown = [s for s in wanted if s not in SAMPLERS]
    if unknown:
        raise CondgenError(f"--samplers: unknown {', '.join(unknown)} (known: {', '.join(SAMPLERS)})")
    out = checked_out(Path(args.out))
    seeds = 1 if args.quick else args.seeds
    frechet_images = 0 if args.quick or args.data is None else args.frechet_images
    if 0 < frechet_images < FEATURES:
        raise CondgenError(f"--frechet-images: {frechet_images} is below the {FEATURES} feature dimensions; 0 = none")
    batches = (1, 8) if args.quick else (1, 8, 32)
    evaluator = load_evaluator(args.evaluator)
    models = [open_model(run, evaluator) for run in args.runs]
    files = label_files(args, evaluator)
    real, frechet_labels = None, None
    if frechet_images:
        real, frechet_labels = frechet_reference(load_dataset(args.data, progress=False), frechet_images, evaluator)
        frechet_images = 0 if real is None else frechet_images
    settings = {"seeds": seeds, "batches": batches, "files": {k: v.tolist() for k, v in files.items()}}
    settings["real"] = None if real is None else [str(Path(args.data).resolve()), frechet_images]
    settings["evaluator"] = evaluator_identity(args.evaluator)
    settings["counter"] = counter_identity(evaluator)

    work = [(m, s) for m in models for s in m.samplers(wanted)]
    if not work:
        raise CondgenError(f"--samplers {args.samplers}: none of them applies to the given models")
    entries = {(m.name, s): cache_dir() / "report" / cache_key(m, s, settings) for m, s in work}
    cached = {pair: read_cache(entry) for pair, entry in entries.items()}
    todo = [(m, s) for m, s in work if cached[(m.name, s)] is None]
    images_per_pair = sum(len(v) for v in files.values()) * seeds + sum(batches) + 2 + DIVERSITY_SEEDS + frechet_images
    estimate = sum(seconds_per_image(m, s) for m, s in todo) * images_per_pair
    print(
        f"{len(work)} model-sampler pairs, {len(work) - len(todo)} cached; about {estimate / 60:.1f} minutes for "
        f"{len(todo)} (x {images_per_pair} images each)"
    )
    results = []
    with progress_bar(total=len(todo) * images_per_pair, desc="report", unit="img") as bar:
        for model, sampler in work:
            entry = entries[(model.name, sampler)]
            result = cached[(model.name, sampler)]
            if result is None:
                staging = entry.with_name(entry.name + ".partial")
                shutil.rmtree(staging, ignore_errors=True)
                result = measure_pair(
                    model, sampler, files, evaluator, seeds, batches, (real, frechet_labels), staging, bar.update
                )
                write_json(staging / "result.json", result)
                shutil.rmtree(entry, ignore_errors=True)
                staging.rename(entry)
            results.append(result)
            for name in files:
                target = out / "images" / f"{model.name}-{sampler}-{name}.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(entry / f"{name}.png", target)
    header = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
        + (torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU")
        + f", torch {torch.__version__}",
        "evaluator": settings["evaluator"],
        "counter": settings["counter"],
        "real_image_ceiling": real_image_ceiling() if args.evaluator is None else None,
        "seeds": seeds,
        "files": {name: len(labels) for name, labels in files.items()},
        "real_images": None if real is None else len(real),
        "frechet_images": frechet_images,
    }
    training = {m.name: measure.training_record(m.folder, batch_size(m)) for m in models}
    return render.write_report(out, header, models, results, training, args.gradnorm)


def open_model(run: str | Path, evaluator) -> Model:
    folder = model_path(run)
    try:
        pipeline = Pipeline(folder)
    except CondgenError as exc:
        raise CondgenError(f"--runs: {exc}") from None
    if tuple(pipeline.loaded.meta["objects"]) != evaluator.codec.names:
        raise CondgenError(f"{folder}: its objects differ from the evaluator's; pass the evaluator it was trained for")
    return Model(folder.resolve().name, folder, pipeline)


def label_files(args: argparse.Namespace, evaluator) -> dict[str, torch.Tensor]:
    """test.json and new_test.json (from --data, else the shipped copies) and every --labels file, by stem."""
    paths = {name: Path(args.data) / f"{name}.json" for name in ICLEVR_LABELS} if args.data else dict(ICLEVR_LABELS)
    paths = {name: path for name, path in paths.items() if path.is_file()}
    paths |= {Path(p).stem: Path(p) for p in args.labels or []}
    files = {name: load_label_file(path, evaluator.codec) for name, path in paths.items()}
    if args.quick:  # the first 16 requests of each file
        files = {name: labels[:16] for name, labels in files.items()}
    return files


def frechet_reference(data, images: int, evaluator) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
    """The evaluator's features of up to ``REAL_IMAGES`` real images, and ``images`` label sets drawn from the same
    data (with replacement) for the generated side, so both sides share the dataset's label distribution. (None,
    None), said on the terminal, when the data holds fewer real images than feature dimensions."""
    if len(data) < FEATURES:
        print(f"no Fréchet distance: --data holds {len(data)} images, fewer than the {FEATURES} it needs")
        return None, None
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:REAL_IMAGES]
    real = evaluator.features(to_signed(data.images[pick]))
    draws = torch.randint(len(data), (images,), generator=torch.Generator().manual_seed(1))
    return real, data.labels[draws]


def measure_pair(model, sampler, files, evaluator, seeds, batches, frechet, grids: Path, advance) -> dict:
    """Every figure of one model and sampler; seed 0's images of each file go to ``grids``/<file>.png. ``frechet``
    is (real features, labels to generate for the distance) or (None, None)."""
    result = {"model": model.name, "kind": model.pipeline.kind, "sampler": sampler}
    result |= {"network_evaluations": model.network_evaluations(sampler), "parameters": model.parameters()}
    for name, labels in files.items():
        scored = measure.quality(model, sampler, labels, evaluator, seeds, advance)
        result[name] = scored.figures
        save_grid(scored.first, grids / f"{name}.png", nrow=8)
    result |= measure.speed(model, sampler, batches)
    advance(sum(batches) + 2)
    result["diversity"] = measure.diversity(model, sampler, evaluator, DIVERSITY_SEEDS)
    advance(DIVERSITY_SEEDS)
    real, frechet_labels = frechet
    if real is not None:
        generated = model.generate(measure.requests_of(frechet_labels, evaluator), 0, sampler)
        advance(len(generated))
        result["frechet_distance"] = measure.fid_to_real(evaluator.features(generated), real)
    return result


def seconds_per_image(model: Model, sampler: str) -> float:
    """One image's generation time (the second one: the first pays for allocations), for the estimate."""
    model.generate([measure.SPEED_REQUEST], 0, sampler)
    begin = time.perf_counter()
    model.generate([measure.SPEED_REQUEST], 0, sampler)
    return time.perf_counter() - begin


def batch_size(model: Model) -> int | None:
    optim = getattr(model.pipeline.loaded.config, "optim", None)
    return getattr(optim, "batch_size", None)


def evaluator_identity(path: Path | None) -> str:
    if path is None:
        return "shipped i-CLEVR evaluator"
    return f"{path} (sha256 {hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]})"


def counter_identity(evaluator: Evaluator) -> str | None:
    """The object counter beside the evaluator (the shipped one, the only one a report counts with), by its weights'
    digest, so a new counter makes cached results miss; None without one."""
    if evaluator.counter is None:
        return None
    weights = resources.files("condgen.evaluate") / "weights" / SHIPPED_COUNTER
    return f"shipped i-CLEVR counter (sha256 {hashlib.sha256(weights.read_bytes()).hexdigest()[:12]})"


def cache_key(model: Model, sampler: str, settings: dict) -> str:
    """The weights and config the model samples with, the sampler and the settings it samples with (a preset may
    change), and every measuring setting."""
    sampling = None if sampler == GAN_PASS else config_to_dict(model.settings(sampler))
    digest = hashlib.sha256(json.dumps([FORMAT, sampler, sampling, settings], sort_keys=True).encode())
    for path in sorted(model.folder.rglob("*")):
        if path.is_file() and path.suffix in (".safetensors", ".yaml", ".json") and "checkpoints" not in path.parts:
            stat = path.stat()
            digest.update(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def read_cache(entry: Path) -> dict | None:
    """A cached result with its grids, or None."""
    try:
        return json.loads((entry / "result.json").read_text())
    except (OSError, ValueError):
        return None


def checked_out(out: Path) -> Path:
    """``--out``, refused when it is a file or already holds a report: nothing is measured for a report that cannot
    be written."""
    if out.exists() and not out.is_dir():
        raise CondgenError(f"--out {out}: a file, not a folder; the report is a folder of files")
    if (out / "report.md").exists():
        raise CondgenError(f"{out}: already holds a report; choose another --out")
    return out
