"""What the benchmarks share: a description of the machine, the sample-and-score pass of diffusion models, a
wall-clock budget that stages spend in turn, and how a script ends (one line, never a traceback)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import os
import platform
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from condgen.data.iclevr import LABEL_FILES, load_dataset, load_label_file
from condgen.data.imageio import save_png
from condgen.data.jsonio import read_json
from condgen.diffusion.presets import PRESETS, sampler_settings
from condgen.diffusion.run import DiffusionModel
from condgen.diffusion.sampling import SampleConfig, network_evaluations
from condgen.diffusion.selection import choose_guidance, image_maker
from condgen.errors import CondgenError, InterruptedTrainingError
from condgen.evaluate.evaluator import Evaluator
from condgen.evaluate.metrics import COUNT_KEYS
from condgen.kinds import KINDS
from condgen.latent.latents import encode_images
from condgen.latent.run import load_autoencoder
from condgen.latent.trainer import AutoencoderRunConfig
from condgen.launch import start_training
from condgen.parser import non_negative_int, positive_int
from condgen.report.measure import score_seeds
from condgen.train.acceleration import BFLOAT16_CPU_FLAGS, cpu_flags
from condgen.train.config import config_to_dict, load_config
from condgen.train.runs import read_metrics
from condgen.viz.grid import save_grid

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "iclevr"  # the i-CLEVR folder the benchmarks run on unless --data names another
RESULTS = ROOT / "benchmarks" / "results"  # where they write unless --results names another folder

# the samplers the benchmarks score, the slowest last: the library's presets (condgen.diffusion.presets.PRESETS)
SAMPLERS = tuple(sampler.value for sampler in PRESETS)


def float_list(text: str) -> list[float]:
    """A comma-separated command-line list of numbers, "1,2.5" -> [1.0, 2.5]."""
    return [float(value) for value in text.split(",")]


def int_list(text: str) -> list[int]:
    """A comma-separated command-line list of whole numbers >= 0, "0,100" -> [0, 100]."""
    return [non_negative_int(value) for value in text.split(",")]


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """--samplers, --guidance, --guidance-min-t, --seeds and --labels, the same in every diffusion benchmark."""
    parser.add_argument("--samplers", default="dpmpp,ddim,ddpm", help="comma-separated subset of dpmpp,ddim,ddpm")
    parser.add_argument(
        "--guidance",
        type=float_list,
        default=[1.0, 2.0, 3.0, 5.0, 8.0],
        help="classifier-free guidance scales to choose from, by accuracy on label lists drawn from train.json "
        "(never the test files); one value fixes it (default 1,2,3,5,8)",
    )
    parser.add_argument(
        "--guidance-min-t",
        type=non_negative_int,
        help="guide only at steps t >= this, for every sampler and in the guidance selection (default: the run's "
        "sample.guidance_min_t)",
    )
    parser.add_argument(
        "--seeds",
        type=positive_int,
        default=3,
        help="noise seeds per test file and sampler (default 3): a 32-image file is a small sample (one object is "
        "worth about 0.013), so the benchmark reports the mean over seeds 0..N-1 and each seed's figure",
    )
    add_label_arguments(parser)


def result_header(device: torch.device) -> dict:
    """The first keys of every benchmark result: the date, the machine and the command line that produced it, its
    script named from the repository root (as the README quotes it) wherever it was started."""
    script = Path(sys.argv[0]).resolve()
    argv = [script.relative_to(ROOT).as_posix() if script.is_relative_to(ROOT) else sys.argv[0], *sys.argv[1:]]
    return {
        "date": datetime.date.today().isoformat(),
        "machine": machine(device),
        "command": " ".join(["python", *[a if " " not in a else repr(a) for a in argv]]),
    }


def add_results_argument(parser: argparse.ArgumentParser) -> None:
    """--results: the folder a benchmark writes its result files (and images) to."""
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="folder for the result files (default benchmarks/results)"
    )


def write_result(name: str, record: dict, folder: Path = RESULTS) -> Path:
    """Writes ``record`` to ``folder``/<name>.json and says where."""
    out = folder / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return out


def earlier_record(path: Path, empty: dict) -> dict:
    """The record an earlier pass wrote to ``path`` (a benchmark adds to its result file), or ``empty`` where there
    is none yet. A malformed file stops the benchmark with a one-line error naming it, rather than being overwritten
    with less."""
    return read_json(path) if path.is_file() else empty


def machine(device: torch.device | None = None) -> str:
    """The machine a result was measured on: the architecture, the CPU and its bfloat16 units (which decide what
    bfloat16 autocast pays, and ``optim.bf16: auto``), cores and threads, the GPU where one ran, torch's version."""
    gpu = device is not None and device.type == "cuda"
    return (
        f"{platform.machine()}, {cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
        + (torch.cuda.get_device_name() if gpu else "CPU")
        + f", torch {torch.__version__}"
    )


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """This CPU's model name and its bfloat16 units, "Intel(R) Xeon(R) ... (bfloat16 units: avx512_bf16)"."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return platform.processor() or "an unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    flags = cpu_flags(cpuinfo) or set()
    units = [flag for flag in BFLOAT16_CPU_FLAGS if flag in flags]
    return f"{name or platform.processor() or 'an unknown CPU'} (bfloat16 units: {', '.join(units) or 'none'})"


COMPOSITIONAL = [ROOT / "benchmarks" / "labels" / f"{name}_triples.json" for name in ("unseen", "seen")]


def add_label_arguments(parser: argparse.ArgumentParser) -> None:
    """--labels: label files scored beside test.json and new_test.json."""
    parser.add_argument(
        "--labels",
        type=Path,
        nargs="*",
        default=COMPOSITIONAL,
        help="label files scored beside the data's test.json and new_test.json (default: the compositional split, "
        "benchmarks/labels/unseen_triples.json and seen_triples.json; see benchmarks/compositional.py)",
    )


def label_files(data: Path, extra: list[Path]) -> dict[str, Path]:
    """The files a benchmark scores, by stem: the data's test.json and new_test.json, then ``extra``."""
    files = [data / name for name in LABEL_FILES] + list(extra)
    return {path.stem: path for path in files}


def score_label_file(
    make_images: Callable[[torch.Tensor, int], torch.Tensor],
    evaluator: Evaluator,
    label_file: Path,
    seeds: int,
    folder: Path,
    grid: Path,
) -> dict:
    """Generates ``make_images(labels, seed)`` for every entry of ``label_file`` and seeds 0..seeds-1, scored by
    `condgen report`'s own :func:`condgen.report.measure.score_seeds`; saves seed 0's images as ``folder/N.png`` and
    an 8-per-row ``grid``. Returns ``{accuracy_<stem>, exact_set_<stem>, count_exact_<stem>, exact_scene_<stem>,
    extra_objects_<stem>, their _by_seed lists, seconds_per_image_<stem>}``."""
    labels = load_label_file(label_file, evaluator.codec)
    scored = score_seeds(make_images, labels, evaluator, seeds)
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(scored.first):
        save_png(image, folder / f"{i}.png")
    save_grid(scored.first, grid)
    stem, result = label_file.stem, {}
    for key in ("accuracy", "exact_set", *COUNT_KEYS):
        if key not in scored.figures:  # an evaluator without a counter
            continue
        result[f"{key}_{stem}"] = scored.figures[key]["mean"]
        result[f"{key}_{stem}_by_seed"] = scored.figures[key]["by_seed"]
    result[f"seconds_per_image_{stem}"] = round(scored.seconds_per_image, 5)
    return result


def seeded_images(make_images: Callable[[torch.Tensor, object], torch.Tensor], sample, labels, seed: int):
    """``make_images`` with ``sample``'s settings and noise ``seed``."""
    return make_images(labels, dataclasses.replace(sample, seed=seed))


def sampler_config(sample_config: SampleConfig, sampler: str, num_steps: int) -> SampleConfig:
    """A model's ``sample_config`` under ``sampler``, as `condgen sample --sampler` and `condgen report` take it
    (:func:`condgen.diffusion.presets.sampler_settings`): its own steps, eta and spacing where it uses that sampler,
    else the preset's, DDPM's steps being the model's T (``num_steps``)."""
    return sampler_settings(sample_config, sampler, num_steps)


def sampler_record(name: str, sample: SampleConfig, guidance: float) -> dict:
    """The sampler settings a result file records: name, steps, eta, guidance scale and interval."""
    steps, eta, min_t = sample.sampler_steps(), sample.eta, sample.guidance_min_t
    return {"name": name, "steps": steps, "eta": eta, "guidance": guidance, "guidance_min_t": min_t}


# Each sampler runs at the guidance scale that suits it, chosen with the sampler named here. DDPM's would take hours
# to choose (128 lists x 5 scales x 1,000 steps); DDIM with eta 1 adds the same noise as DDPM in fewer steps.
GUIDANCE_CHOSEN_WITH = {"dpmpp": "dpmpp", "ddim": "ddim", "ddpm": "ddim"}

PASS_KEYS = {"date", "machine", "command", "guidance_min_t", "samplers"}  # not the training's


def kept_samplers(results: Path, record: dict, rescored: list[str]) -> dict:
    """The sampler results in ``results`` (an earlier pass) that ``record`` may keep: those not in ``rescored``, when
    that pass scored the same training run (every key but ``PASS_KEYS`` equal) with the same guidance_min_t, and
    that recorded their guidance scale."""
    previous = earlier_record(results, {})
    if not previous:
        return {}
    same_run = all(previous.get(key) == value for key, value in record.items() if key not in PASS_KEYS)
    if not same_run or previous.get("guidance_min_t", 0) != record["guidance_min_t"]:
        return {}
    return {
        name: {**result, "scored_on": result.get("scored_on", previous["date"])}
        for name, result in previous.get("samplers", {}).items()
        if name not in rescored and "guidance" in result
    }


def score_samplers(
    loaded: DiffusionModel,
    evaluator: Evaluator,
    data: Path,
    args: argparse.Namespace,
    out_dir: Path,
    record: dict,
    results: Path,
) -> None:
    """Chooses each sampler's guidance scale among ``args.guidance`` (:func:`choose_guidance`), then samples
    test.json, new_test.json and the files of ``args.labels`` with every sampler of ``args.samplers`` at its scale
    and with each of ``args.seeds`` noise seeds, saves seed 0's images under ``out_dir/<file stem>/<sampler>/`` and a
    grid per file and sampler, and adds each sampler's guidance, top-k accuracies and exact-set rates (the mean over
    seeds, and each seed's) and seconds per image to
    ``record["samplers"]``, written to ``results`` after every sampler (so a long DDPM pass never holds the others
    back).

    With --score-only, the samplers that ``results`` already holds for the same training run and guidance_min_t and
    that ``args.samplers`` leaves out are kept, with their images and the date they were scored on: one sampler can
    be scored again without DDPM-1000's hour."""

    make_images = image_maker(loaded)
    diffusion, sample_config = loaded.diffusion, loaded.config.sample
    if args.guidance_min_t is not None:
        sample_config = dataclasses.replace(sample_config, guidance_min_t=args.guidance_min_t)
    sample_config.check(diffusion.num_steps)
    record["guidance_min_t"] = sample_config.guidance_min_t
    selections: dict[str, dict] = {}  # by the sampler that chose

    def guidance(sampler: str) -> dict:
        """``{"guidance": scale}``, with the selection that chose it when there was a choice."""
        if len(args.guidance) == 1:
            return {"guidance": args.guidance[0]}
        chooser = GUIDANCE_CHOSEN_WITH[sampler]
        if chooser not in selections:
            chooser_config = sampler_config(sample_config, chooser, diffusion.num_steps)
            selections[chooser] = choose_guidance(make_images, chooser_config, evaluator, data, args.guidance)
        return {"guidance": selections[chooser]["chosen"], "guidance_selection": selections[chooser]}

    rescored = args.samplers.split(",")
    record["samplers"] = kept_samplers(results, record, rescored) if args.score_only else {}
    for sampler in set(SAMPLERS) - set(record["samplers"]):  # images of an earlier pass that no longer belong
        for stem in label_files(data, args.labels):
            shutil.rmtree(out_dir / stem / sampler, ignore_errors=True)
            (out_dir / f"{stem}_{sampler}_grid.png").unlink(missing_ok=True)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(record, indent=2) + "\n")
    for sampler in rescored:
        result = guidance(sampler)
        sample = dataclasses.replace(
            sampler_config(sample_config, sampler, diffusion.num_steps), guidance=result["guidance"]
        )
        result |= {
            "steps": sample.steps,
            "network_evaluations_per_image": network_evaluations(sample, diffusion.num_steps),
        }
        if sampler != "ddpm":  # DDPM visits every step, and its noise is its posterior variance, not an eta
            result |= {"eta": sample.eta, "spacing": sample.spacing.value}
        for stem, file in label_files(data, args.labels).items():
            seeded = functools.partial(seeded_images, make_images, sample)
            folder, grid = out_dir / stem / sampler, out_dir / f"{stem}_{sampler}_grid.png"
            result |= score_label_file(seeded, evaluator, file, args.seeds, folder, grid)
        print(sampler, json.dumps(result), flush=True)
        record["samplers"][sampler] = result
        results.write_text(json.dumps(record, indent=2) + "\n")


def train_autoencoder(
    kind: str, data: Path, run: Path, config: Path, minutes: float, overrides: list[str] | None = None
) -> dict:
    """Trains a ``kind`` (vae or vqvae) run for ``minutes`` from scratch, with config ``overrides`` (KEY=VALUE);
    returns :func:`describe_autoencoder`."""
    shutil.rmtree(run, ignore_errors=True)
    start_training(kind, data, run, config, [f"loop.max_minutes={minutes}", *(overrides or [])], resume=False)
    return describe_autoencoder(kind, data, run)


def describe_autoencoder(kind: str, data: Path, run: Path) -> dict:
    """A trained autoencoder run's record for a result file, with ``encode_minutes``: how long encoding the whole
    training set will take (timed on 512 images), which a latent model's budget must pay before its own training
    starts, as it pays ``train_seconds``."""
    records = read_metrics(run)
    last = [record for record in records if "seconds" in record][-1]
    scores = [record for record in records if "psnr" in record]
    images = load_dataset(data, progress=False).images
    start = time.perf_counter()
    encode_images(load_autoencoder(run), images[:512])
    return {
        "kind": kind,
        "config": config_to_dict(load_config(AutoencoderRunConfig, run / "config.yaml")),
        "train_steps": last["step"],
        "train_seconds": round(last["seconds"], 1),
        "best_held_out_scores": max(scores, key=lambda r: r["accuracy"]),
        "encode_minutes": round((time.perf_counter() - start) / 60 * len(images) / 512, 2),
    }


@dataclasses.dataclass
class Budget:
    """A benchmark's wall-clock budget in minutes, which its stages spend in turn: each gets ``loop.max_minutes`` of
    at most what is left, and a stage that finds nothing left stops the benchmark with one line naming the stages
    that spent it (a budget of 0 minutes would read as "no limit" to the training loop). ``already`` minutes were
    spent before this process started (``spent_by`` names by what)."""

    minutes: float
    already: float = 0.0
    spent_by: list[str] = dataclasses.field(default_factory=list)
    started: float = dataclasses.field(default_factory=time.perf_counter)

    def used(self) -> float:
        return self.already + (time.perf_counter() - self.started) / 60

    def minutes_for(self, stage: str, share: float = 0.0, upfront: float = 0.0, upfront_for: str = "") -> float:
        """``stage``'s ``loop.max_minutes``: what is left once ``upfront`` more minutes are paid (``upfront_for``
        says for what, e.g. encoding the training set), at most ``share`` (0: all that is left). Raises
        :class:`CondgenError` when nothing is left."""
        used = self.used()
        left = round(self.minutes - used - upfront, 2)
        if left <= 0:
            spent = f"{_and(self.spent_by)} used {_minutes(used)} of {self.minutes:g} minutes" if self.spent_by else ""
            spent = spent or f"--budget-minutes {self.minutes:g} leaves nothing to spend"
            paid = f" and {upfront_for} takes {_minutes(upfront)} more" if upfront > 0 else ""
            raise CondgenError(f"{spent}{paid}; nothing left for the {stage}")
        self.spent_by.append(stage)
        return min(left, share) if share > 0 else left


def _minutes(value: float) -> str:
    """46.0, or 0.03 for a budget of seconds."""
    return f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def _and(names: list[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def configured_minutes(kind: str, config: Path | None, overrides: list[str]) -> float:
    """The ``loop.max_minutes`` that a ``kind`` run's ``config`` file and ``overrides`` set (0: none)."""
    return load_config(KINDS[kind].config_class(), config, overrides).loop.max_minutes


def run_benchmark(main: Callable[[], object]) -> None:
    """Runs a benchmark script's ``main`` as `condgen` runs a command: a :class:`CondgenError` (a spent budget among
    them) ends it with one line and status 2; SIGTERM or Ctrl-C with one line and status 130 (during training after
    the step in progress, whose checkpoint is saved). Never a traceback for these."""
    script = Path(sys.argv[0]).name
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # the training loop takes it over while it trains
    try:
        main()
    except InterruptedTrainingError as exc:
        sys.exit(_said(f"{script}: stopped: {exc}", 130))
    except KeyboardInterrupt as exc:
        sys.exit(_said(f"{script}: stopped by {exc.args[0] if exc.args else 'SIGINT'}", 130))
    except CondgenError as exc:
        sys.exit(_said(f"{script}: error: {exc}", 2))
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _said(line: str, status: int) -> int:
    print(line, file=sys.stderr)
    return status
