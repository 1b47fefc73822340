"""``condgen export``: a training run's generator as a self-describing, inference-only model folder.

A model folder is the part of a run folder that sampling reads, so every command that takes ``--run`` takes it
too (``--model`` is the same option), and :func:`condgen.load` opens either:

    run.json          kind, object vocabulary, largest scene, "format" (the layout version), where it came from
    config.yaml       the run's config (an ldm's ``autoencoder`` is the folder ``autoencoder/`` beside it)
    best/             ema.safetensors (the sampled weights; with ``--half`` float16 in byte planes, condgen.tensorfile)
                      and state.json (kind, step); a GAN whose critic has an auxiliary head also
                      critic.safetensors, which ranks candidates
    autoencoder/      an ldm's autoencoder, as a model folder of its own
    classifier/       a diffusion model's noisy classifier, when exported with one (guidance, best-of-K ranking)
    ranker.safetensors  a diffusion model's image ranker, when exported with one (best-of-K ranking of the decoded
                      images, before the classifier)
    README.md         the model card: how it was trained and what it scored

Nothing in it is pickled: safetensors, JSON and YAML.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from condgen.data.jsonio import read_json, write_json
from condgen.data.labels import LabelCodec
from condgen.diffusion.run import CLASSIFIER_FOLDER
from condgen.errors import CondgenError
from condgen.evaluate.evaluator import save_evaluator
from condgen.evaluate.ranker import RANKER_FILE, load_ranker
from condgen.files import staged_folder
from condgen.gan.run import CRITIC_FILE
from condgen.generate import guiding_classifier
from condgen.kinds import KINDS, Generation, kind_of
from condgen.tensorfile import save_tensors
from condgen.train.checkpoint import load_tensors
from condgen.train.config import load_config
from condgen.train.runs import MODEL_FORMAT, checkpoint_folder, read_metrics, read_run


def export_model(
    run: Path,
    out: Path,
    checkpoint: str = "best",
    half: bool = False,
    classifier: Path | None = None,
    ranker: Path | None = None,
    ranker_half: bool | None = None,
) -> Path:
    """Writes the model folder of ``run``'s ``checkpoint`` (best or latest) to ``out``, which must not exist, with the
    noisy ``classifier`` run as ``classifier/`` when given (a diffusion run's, checked to match it) and the image
    ``ranker`` as ranker.safetensors, in float16 when ``ranker_half`` (default: as ``half``). ``run`` may be a model
    folder itself, to store it again (in float16, say)."""
    meta = read_run(run)
    kind = kind_of(meta, run)
    if kind.generation is None:
        able = ", ".join(k.name for k in KINDS.values() if k.generation is not None)
        raise CondgenError(f"{run}: a {kind.name} run generates no images; export takes one of: {able}")
    if out.exists():
        raise CondgenError(f"{out}: already exists; choose a new --out")
    if classifier is None and (run / CLASSIFIER_FOLDER).is_dir():
        classifier = run / CLASSIFIER_FOLDER  # re-exporting a model folder keeps its classifier
    if classifier is not None:
        if kind.generation != Generation.DIFFUSION:
            raise CondgenError(f"--classifier: diffusion runs only; {run} is a {kind.name} run")
        guiding_classifier(kind.load_model(run, checkpoint), classifier)  # refuses one that does not match
    if ranker is None and (run / RANKER_FILE).is_file():
        ranker = run / RANKER_FILE
    if ranker is not None:
        if kind.generation != Generation.DIFFUSION:
            raise CondgenError(f"--ranker: diffusion runs only; {run} is a {kind.name} run")
        ranker_model = load_ranker(ranker, meta["objects"])  # refuses the evaluator and other vocabularies
    with staged_folder(out) as staging:
        config = yaml.safe_load((run / "config.yaml").read_text())
        names = ["ema.safetensors"]
        typed = load_config(kind.config_class(), run / "config.yaml")
        if kind.generation == Generation.GAN and typed.model.auxiliary_head:
            names.append(CRITIC_FILE)  # best-of-K sampling ranks by its auxiliary head (condgen.gan.sampling)
        step = _export_weights(run, kind.name, checkpoint, names, staging, half)
        if kind.needs_autoencoder:
            autoencoder = run / config["autoencoder"]  # a run's is absolute, a model folder's relative to it
            ae_meta = read_run(autoencoder)
            target = staging / "autoencoder"
            ae_step = _export_weights(autoencoder, ae_meta["kind"], "best", ["model.safetensors"], target, half)
            ae_meta |= {"format": MODEL_FORMAT, "exported_from": str(autoencoder), "step": ae_step}
            write_json(target / "run.json", ae_meta)
            shutil.copy(autoencoder / "config.yaml", staging / "autoencoder" / "config.yaml")
            config["autoencoder"] = "autoencoder"
        if classifier is not None:
            _export_classifier(classifier, staging / CLASSIFIER_FOLDER, half)
        if ranker is not None:
            save_evaluator(
                ranker_model,
                LabelCodec(meta["objects"]),
                staging / RANKER_FILE,
                half if ranker_half is None else ranker_half,
            )
        (staging / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        write_json(staging / "run.json", meta | {"format": MODEL_FORMAT, "exported_from": str(run), "step": step})
        (staging / "README.md").write_text(model_card(run, out, meta, step, half))
    return out


def _export_classifier(run: Path, target: Path, half: bool) -> None:
    """A noisy classifier run's best weights, config and run.json as a folder of its own."""
    meta = read_run(run)
    step = _export_weights(run, meta["kind"], "best", ["model.safetensors"], target, half)
    config = yaml.safe_load((run / "config.yaml").read_text())
    if "autoencoder" in config:
        config["autoencoder"] = "../autoencoder"  # the model folder's own
    (target / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    write_json(target / "run.json", meta | {"format": MODEL_FORMAT, "exported_from": str(run), "step": step})


def _export_weights(run: Path, kind: str, checkpoint: str, names: list[str], target: Path, half: bool) -> int:
    """Copies weights files of a run's checkpoint into ``target/best/`` (in float16 byte planes when ``half``), with
    a state.json that names its kind and step; returns the step."""
    folder, _ = checkpoint_folder(run, kind, checkpoint)
    state = read_json(folder / "state.json")
    (target / "best").mkdir(parents=True)
    for name in names:
        save_tensors(load_tensors(folder / name), target / "best" / name, half=half)
    write_json(target / "best" / "state.json", {"kind": kind, "step": state["step"]})
    return state["step"]


def model_card(run: Path, out: Path, meta: dict, step: int, half: bool) -> str:
    """README.md of a model folder: what it is, how it was trained (from the run's own records) and what its periodic
    evaluation scored at the exported step."""
    records = read_metrics(run) if (run / "metrics.jsonl").is_file() else []  # a model folder has none
    trained = [r for r in records if "seconds" in r]
    scores = next((r for r in records if r["step"] == step and "accuracy" in r), None)
    lines = [
        f"# condgen {meta['kind']} model",
        "",
        f"A conditional generator of 64x64 scenes of up to {meta['max_objects']} objects out of "
        f"{len(meta['objects'])} ({', '.join(meta['objects'][:3])}, ...), exported from the run `{run}` at step {step}"
        + (" with its weights in float16." if half else "."),
        "",
        "```python",
        "import condgen",
        "",
        f'model = condgen.load("{out}")  # this folder',
        'images = model.generate(["red sphere, cyan cube"], seed=0)  # (1, 3, 64, 64) in [-1, 1]',
        "```",
        "",
        "## Training",
        "",
        f"- data: `{meta['data']}`; evaluator: {meta.get('evaluator') or 'none'}",
        f"- {trained[-1]['step']} steps in {trained[-1]['seconds'] / 60:.1f} minutes of the last invocation"
        if trained
        else "- no training record",
        "- config: `config.yaml` beside this file (YAML over the dataclass defaults of its kind)",
        "",
        "## Scores",
        "",
    ]
    if scores is None:
        lines.append("No periodic evaluation was recorded at this step.")
    else:
        lines.append(f"The training run's own evaluation at step {step} (one noise seed, its evaluator):")
        lines.append("")
        lines += [f"- {key}: {value:.4f}" for key, value in scores.items() if key.startswith(("accuracy", "exact_set"))]
    return "\n".join(lines) + "\n"
