"""A model folder's README.md, its model card: what the model is, how to use it, how it was trained and what it
scored. With a benchmark's result file (`condgen export --result`) the training record and the score table are the
benchmark's; without one, the run's own records (its steps, minutes and periodic evaluation) stand in."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from condgen.data.jsonio import read_json
from condgen.evaluate.counter import real_image_ceiling
from condgen.evaluate.metrics import COUNT_KEYS
from condgen.evaluate.ranker import RANKER_COUNTER_FILE, RANKER_FILE
from condgen.export.record import LABEL_FILES, BenchmarkRecord
from condgen.gan.sampling import network_passes
from condgen.kinds import Generation, kind_of
from condgen.pretrained import ICLEVR_LABELS
from condgen.tensorfile import CHANNEL_CODES, read_metadata, read_tensors
from condgen.train.runs import read_metrics


def model_card(
    folder: Path,
    name: str,
    source: Path,
    commands: list[str],
    half: bool,
    ranker_half: bool,
    record: BenchmarkRecord | None = None,
    check: dict | None = None,
) -> str:
    """The card of the model folder ``folder``, opened as ``name``, exported from ``source`` by ``commands``, its
    generator's weights in float16 if ``half`` and its image ranker's (where it has one) if ``ranker_half``;
    ``record`` is the benchmark that trained and scored it, ``check`` the float16 check (:mod:`condgen.export.half`)."""
    meta = read_json(folder / "run.json")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    diffusion = kind_of(meta, folder).generation is Generation.DIFFUSION
    stored = "float16" if half else "float32"
    lines = [f"# {name}", "", describe_model(folder, meta, stored), "", *usage(name), ""]
    ranked_by_image, counted = (folder / RANKER_FILE).is_file(), (folder / RANKER_COUNTER_FILE).is_file()
    lines += [(default_sampling if diffusion else gan_sampling)(config, ranked_by_image, counted), ""]
    lines += ["## How it was trained", "", "```bash", *(record.commands if record else ()), *commands, "```", ""]
    lines += training(record, source, meta) + ["", "## Scores", ""]
    lines += score_table(record, ranked_by_image, counted) if record else run_scores(source, meta["step"])
    ranker = ranker_storage(folder / RANKER_FILE, ranker_half)
    lines += ["", precision(check, stored, ranker, ranked_by_image, counted)]
    return "\n".join(lines) + "\n"


def parameters(weights: Path) -> int:
    return sum(tensor.numel() for tensor in read_tensors(weights)[0].values())


def describe_model(folder: Path, meta: dict, stored: str) -> str:
    kind = meta["kind"]
    network = parameters(folder / "best" / "ema.safetensors")
    text = (
        f"A condgen `{kind}` model: 64x64 scenes of up to {meta['max_objects']} objects out of "
        f"{len(meta['objects'])} ({', '.join(meta['objects'][:3])}, ...), from a {network / 1e6:.1f} M-parameter "
        f"{'generator' if kind in ('gan', 'latent_gan') else 'UNet'}"
    )
    if (folder / "autoencoder").is_dir():
        autoencoder = parameters(folder / "autoencoder" / "best" / "model.safetensors")
        text += f" on the latents of a {autoencoder / 1e6:.2f} M-parameter autoencoder"
    return text + f"; {stored} weights of step {meta['step']}, exported from `{meta['exported_from']}`."


def usage(name: str) -> list[str]:
    return [
        "```bash",
        f'condgen sample --model {name} --objects "red sphere, cyan cube" --out out/one',
        "```",
        "",
        "```python",
        "import condgen",
        "",
        f'images = condgen.load("{name}").generate(["red sphere, cyan cube"], seed=0)  # (1, 3, 64, 64), [-1, 1]',
        "```",
    ]


def default_sampling(config: dict, ranked_by_image: bool, counted: bool = False) -> str:
    """A diffusion folder's default sampling (``config.yaml``'s ``sample``) in words; ``counted``: its image ranker
    ranks with an object counter of its own."""
    s = config["sample"]
    text = f"Default sampling (`config.yaml`, `sample`): {s['sampler']}, {s['steps']} steps, guidance {s['guidance']:g}"
    if s.get("guidance_min_t"):
        text += f" at t >= {s['guidance_min_t']}"
    text += f", {s['spacing']} spacing, eta {s['eta']:g}"
    if s.get("classifier_scale") or s.get("classifier_absent_scale"):
        text += (
            f", classifier guidance {s['classifier_scale']:g} towards the requested objects and "
            f"{s['classifier_absent_scale']:g} away from the others"
        )
    if s.get("candidates", 1) > 1:
        ranker = (
            image_ranker_words(counted)
            if ranked_by_image
            else "the noisy classifier beside the model (`classifier/`, trained on the training data, never the "
            "evaluator)"
        )
        text += f", each image the best of {s['candidates']} ranked by {ranker}; `--candidates 1` samples plainly"
    return text + f"; seed {s['seed']}. Every `condgen sample` option changes it."


def image_ranker_words(counted: bool) -> str:
    """The image ranker beside a model folder in words, with what its own object counter adds where it has one."""
    words = (
        "the image ranker beside the model (`ranker.safetensors`, trained on the training images, never the evaluator)"
    )
    if not counted:
        return words
    return words + (
        " and its own object counter (`ranker_counter.safetensors`, trained with `condgen train counter`, never the "
        "shipped counter), which ranks down a candidate holding more or fewer objects than requested"
    )


def gan_sampling(config: dict, ranked_by_image: bool = False, counted: bool = False) -> str:
    """A GAN folder's default sampling in words; ``ranked_by_image``: an image ranker ranks its candidates, before
    its critic, with an object counter of its own if ``counted``."""
    k = config.get("candidates", 1)
    if k > 1 and ranked_by_image:
        return (
            f"Each image is the best of {k} generator evaluations (`config.yaml`, `candidates`), ranked by "
            f"{image_ranker_words(counted)}; `--candidates 1` samples plainly, `--seed` picks the noise."
        )
    if k > 1:
        return (
            f"Each image is the best of {k} generator evaluations (`config.yaml`, `candidates`): the one whose "
            "objects the GAN's own critic, shipped beside it, finds closest to exactly the request (its auxiliary "
            "multi-label head, trained on the training images, never the evaluator); `--candidates 1` samples "
            "plainly, `--seed` picks the noise."
        )
    return "One generator evaluation per image; `--seed` picks the noise."


def training(record: BenchmarkRecord | None, source: Path, meta: dict) -> list[str]:
    """How the run trained: the benchmark's stages, or the run's own record."""
    if record is not None:
        return [f"Trained {record.budget()}, stage by stage:", "", *(f"- {stage}" for stage in record.stages())]
    records = read_metrics(source) if (source / "metrics.jsonl").is_file() else []  # a model folder has none
    timed = [r for r in records if "seconds" in r]
    last = (
        f"{timed[-1]['step']} steps in {timed[-1]['seconds'] / 60:.1f} minutes of the last invocation"
        if timed
        else "no training record"
    )
    return [
        f"- data: `{meta['data']}`; evaluator: {meta.get('evaluator') or 'none'}",
        f"- {last}",
        "- config: `config.yaml`",
    ]


def score_table(record: BenchmarkRecord, ranked_by_image: bool = False, counted: bool = False) -> list[str]:
    """The benchmark's top-k accuracy / exact-set rate per label file and row, with seconds per image; where the
    record holds the object counter's figures, top-k accuracy / exact-set rate / exact-scene rate, with the shipped
    judges' figures on real images as the last row. ``ranked_by_image``: the folder ranks with an image ranker (and
    its object counter if ``counted``)."""
    rows = record.rows(ranked_by_image, counted)
    files = [key for key in LABEL_FILES if f"accuracy_{key}" in rows[0][1]]
    # the record holds the shipped counter's figures (whether the folder ranks with a counter is ``counted``)
    judged = all(f"exact_scene_{f}" in scored and f"count_exact_{f}" in scored for _, scored in rows for f in files)
    keys = ("accuracy", "exact_set", "exact_scene") if judged else ("accuracy", "exact_set")
    ceiling = real_image_ceiling() if judged else None
    lines = [
        score_words(judged) + f", mean over noise seeds 0 to {record.seeds() - 1}, from `{record.path}`. "
        "unseen / seen: three-object requests that never / do occur in train.json (`benchmarks/labels/`); unseen "
        "(scoring half): the half of the unseen ones that no setting was chosen on."
        + (f" The last row, {REAL_IMAGES}: the same judges on held-out real i-CLEVR scenes." if ceiling else ""),
        "",
        "| sampling | network evaluations | " + " | ".join(LABEL_FILES[f] for f in files) + " | seconds per image |",
        "|---|---|" + "---|" * len(files) + "---|",
    ]
    for name, scored in rows:
        cells = [" / ".join(f"{scored[f'{key}_{f}']:.3f}" for key in keys) for f in files]
        evaluations = scored.get("network_evaluations_per_image")
        if evaluations is None:  # a GAN's record: its generator and ranking passes
            evaluations = network_passes(scored.get("candidates", 1), 1 + counted if ranked_by_image else 1)
        lines.append(
            f"| {name} | {evaluations} | " + " | ".join(cells) + f" | {scored['seconds_per_image_test']:.3g} |"
        )
    if ceiling is not None:
        cell = " / ".join(f"{ceiling[key]:.3f}" for key in keys)
        lines.append(f"| {REAL_IMAGES} | - | " + " | ".join([cell] * len(files)) + " | - |")
    return lines


REAL_IMAGES = "real images (held out)"  # the ceiling's row: the shipped judges on held-out real i-CLEVR scenes


def score_words(counted: bool) -> str:
    """What a score table's cells are, in words: with the counter's figures (``counted``), the exact-scene rate."""
    words = (
        "The shipped evaluator's top-k accuracy / exact-set rate (the share of images whose detected objects are "
        "exactly the requested ones)"
    )
    if not counted:
        return words
    return (
        f"{words} / exact-scene rate (the share whose detected objects are exactly the requested ones and in which the "
        "shipped object counter counts as many objects as requested: every requested object once, nothing else, "
        "where a set measure lets an object drawn twice pass)"
    )


RUN_SCORE_KEYS = ("accuracy", "exact_set", *COUNT_KEYS)  # and their per-file keys


def run_scores(source: Path, step: int) -> list[str]:
    records = read_metrics(source) if (source / "metrics.jsonl").is_file() else []
    scores = next((r for r in records if r["step"] == step and "accuracy" in r), None)
    if scores is None:
        return ["No periodic evaluation was recorded at this step."]
    return [
        f"The training run's own evaluation at step {step} (one noise seed, its evaluator):",
        "",
        *(f"- {key}: {value:.4f}" for key, value in scores.items() if key.startswith(RUN_SCORE_KEYS)),
    ]


def ranker_storage(path: Path, half: bool) -> str:
    """How the image ranker at ``path`` is stored: float32, float16, or codes of a few bits per channel."""
    if path.is_file():
        codes = read_metadata(path).get(CHANNEL_CODES)
        if codes:
            return f"{json.loads(codes)['bits']}-bit codes per output channel"
    return "float16" if half else "float32"


def precision(check: dict | None, stored: str, ranker: str, has_ranker: bool, has_counter: bool = False) -> str:
    """How the weights are stored (an image ranker's object counter as the ranker) and, after a float16 check, what
    it found."""
    coded = ranker.endswith("per output channel")
    if has_ranker and coded:
        rest = "its biases and norms" + (" and its counter" if has_counter else "")
        text = (
            f"The weights ship in {stored}; the ranker's convolution and linear weights in {ranker}, {rest} in float16"
        )
    else:
        ranking = "the ranker and its counter ship" if has_counter else "the ranker ships"
        text = f"The weights ship in {stored}" + (f", {ranking} in {ranker}" if has_ranker else "")
    lossless = "" if coded else ", lossless"
    float16 = "float16" in (stored, ranker) or (has_ranker and coded)
    text += f" (float16 stored in byte planes{lossless}: `condgen/tensorfile.py`)." if float16 else "."
    if check is None:
        return text
    found = (
        f"Float16 check: over seeds 0 to {check['seeds'] - 1} on test.json and new_test.json, the float32 and "
        f"float16 weights gave {'the same scores' if check['same_scores'] else 'different scores'} (largest pixel "
        f"difference {check['largest_pixel_difference']} on a [-1, 1] scale){score_changes(check)}; float16's mean "
        f"over the seeds is {'no lower on any' if check['float16_no_lower'] else 'lower on some'} file and measure."
    )
    if "ranker_choices_changed" in check:
        copy = f"The image ranker's {check.get('ranker_copy', 'float16')} copy" + (
            " (with its counter's)" if has_counter else ""
        )
        found += f" {copy} keeps another candidate than the float32 one on {check['ranker_choices_changed']} requests."
    return f"{found} {text}"


def score_changes(check: dict) -> str:
    """The scores float16 changed, as ': test.json accuracy, seed 2: 0.944 -> 0.958'."""
    changed = [
        f"{ICLEVR_LABELS[file].name} {measure.replace('_', '-')}, seed {seed}: {full} -> {half}"
        for file, scores in check["scores"]["float32"].items()
        for measure, values in scores.items()
        for seed, (full, half) in enumerate(zip(values, check["scores"]["float16"][file][measure]))
        if full != half
    ]
    return ": " + "; ".join(changed) if changed else ""
