"""A training run's generator as a self-describing, inference-only model folder (`condgen export`).

A model folder is the part of a run folder that sampling reads, so every command that takes ``--run`` takes it
too (``--model`` is the same option), and :func:`condgen.load` opens either:

    run.json          kind, object vocabulary, largest scene, "format" (the layout version), where it came from
    config.yaml       the run's config (an ldm's ``autoencoder`` is the folder ``autoencoder/`` beside it)
    best/             ema.safetensors (the sampled weights; with ``--half`` float16 in byte planes, condgen.tensorfile)
                      and state.json (kind, step); a GAN whose critic has an auxiliary head also
                      critic.safetensors, which ranks candidates
    autoencoder/      an ldm's autoencoder, as a model folder of its own
    classifier/       a diffusion model's noisy classifier, when exported with one (guidance, best-of-K ranking)
    ranker.safetensors  an image ranker, when exported with one (best-of-K ranking of the decoded images, before a
                      diffusion model's classifier or a GAN's critic)
    ranker_counter.safetensors  the image ranker's own object counter, when exported with one (a
                      `condgen train counter` run, never the shipped counter): ranks down a candidate holding more or
                      fewer objects than requested; in the ranker's precision
    rankers.json      {"folder": "../other"}, in place of the two files above: the ranker and counter of another model
                      folder, which this one shares (written by benchmarks/ship.py --share-rankers-with)
    README.md         the model card: how it was trained and what it scored

Nothing in it is pickled: safetensors, JSON and YAML.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import yaml

from condgen.data.jsonio import read_json, write_json
from condgen.data.labels import LabelCodec
from condgen.diffusion.run import CLASSIFIER_FOLDER
from condgen.errors import CondgenError
from condgen.evaluate.counter import ObjectCounter, save_counter
from condgen.evaluate.evaluator import save_evaluator
from condgen.evaluate.ranker import (
    RANKER_COUNTER_FILE,
    RANKER_FILE,
    load_ranker,
    load_ranker_counter,
    own_ranker_files,
    ranker_counter_weights,
    ranker_weights,
)
from condgen.files import staged_folder
from condgen.gan.run import CRITIC_FILE
from condgen.generate import guiding_classifier
from condgen.kinds import KINDS, Generation, Kind, kind_of
from condgen.tensorfile import BYTE_PLANES, CHANNEL_CODES, read_metadata, save_tensors
from condgen.train.checkpoint import load_tensors
from condgen.train.config import load_config
from condgen.train.runs import MODEL_FORMAT, checkpoint_folder, read_run


def export_model(
    run: Path,
    out: Path,
    checkpoint: str = "best",
    half: bool = False,
    classifier: Path | None = None,
    ranker: Path | None = None,
    ranker_half: bool | None = None,
    ranker_counter: Path | None = None,
    ranker_bits: int | None = None,
) -> Path:
    """Writes the model folder of ``run``'s ``checkpoint`` (best or latest) to ``out``, which must not exist, with the
    noisy ``classifier`` run as ``classifier/`` when given (a diffusion run's, checked to match it), the image
    ``ranker`` as ranker.safetensors, in float16 when ``ranker_half`` (default: as ``half``), and the ranker's own
    object counter ``ranker_counter`` as ranker_counter.safetensors in the ranker's precision; with ``ranker_bits``,
    the ranker's convolution and linear weights as codes of that many bits per channel (:mod:`condgen.tensorfile`)
    and the rest, its counter too, in float16. ``run`` may be a model folder itself, to store it again (in float16,
    say); it keeps its classifier, ranker, ranker counter and origin. The model card is :mod:`condgen.export.card`'s
    to write."""
    meta = read_run(run)
    kind = kind_of(meta, run)
    if kind.generation is None:
        able = ", ".join(k.name for k in KINDS.values() if k.generation is not None)
        raise CondgenError(f"{run}: a {kind.name} run generates no images; export takes one of: {able}")
    if out.exists():
        raise CondgenError(f"{out}: already exists; choose a new --out")
    classifier = _checked_classifier(run, kind, checkpoint, classifier)
    ranker_model, ranker_file = _checked_ranker(run, kind, meta, ranker)
    counter, counter_file = _checked_ranker_counter(run, kind, meta, ranker_counter, ranker_model is not None)
    if ranker_bits is not None and ranker_model is None:
        raise CondgenError(f"--ranker-bits: {run} has no image ranker to store so; give --ranker RUN too")
    with staged_folder(out) as staging:
        config = yaml.safe_load((run / "config.yaml").read_text())
        names = ["ema.safetensors"]
        typed = load_config(kind.config_class(), run / "config.yaml")
        if kind.generation == Generation.GAN and typed.model.auxiliary_head:
            names.append(CRITIC_FILE)  # best-of-K sampling ranks by its auxiliary head (condgen.gan.sampling)
        step = _export_weights(run, kind.name, checkpoint, names, staging, half)
        if config.get("autoencoder"):  # a latent model decodes through it
            _export_part(run / config["autoencoder"], staging / "autoencoder", half)
            config["autoencoder"] = "autoencoder"  # a run's is absolute, a model folder's relative to it
        _record_sources(config)
        if classifier is not None:
            _export_part(classifier, staging / CLASSIFIER_FOLDER, half)
        ranker_half = (half if ranker_half is None else ranker_half) or ranker_bits is not None
        # a file already stored as asked is copied byte for byte: codes decoded and coded again would move
        if ranker_model is not None and _stored_as(ranker_file, ranker_half, ranker_bits):
            shutil.copyfile(ranker_file, staging / RANKER_FILE)
        elif ranker_model is not None:
            codec = LabelCodec(meta["objects"])
            save_evaluator(ranker_model, codec, staging / RANKER_FILE, ranker_half, ranker_bits)
        if counter is not None and _stored_as(counter_file, ranker_half, None):
            shutil.copyfile(counter_file, staging / RANKER_COUNTER_FILE)
        elif counter is not None:  # it ranks beside the ranker, so it is stored as the ranker is
            save_counter(counter.model, counter.codec, staging / RANKER_COUNTER_FILE, ranker_half)
        (staging / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        write_json(staging / "run.json", _exported_meta(run, meta, step))
    return out


def _checked_classifier(run: Path, kind: Kind, checkpoint: str, classifier: Path | None) -> Path | None:
    """The noisy classifier to carry: the one given, checked to match the run, or a model folder's own."""
    if classifier is None and (run / CLASSIFIER_FOLDER).is_dir():
        classifier = run / CLASSIFIER_FOLDER  # re-exporting a model folder keeps its classifier
    if classifier is not None:
        if kind.generation != Generation.DIFFUSION:
            raise CondgenError(f"--classifier: diffusion runs only; {run} is a {kind.name} run")
        guiding_classifier(kind.load_model(run, checkpoint), classifier)  # refuses one that does not match
    return classifier


def _stored_as(weights: Path, half: bool, bits: int | None) -> bool:
    """Whether a ranker's or counter's weights file is stored as asked: in float16 byte planes if ``half``, and in
    codes of ``bits`` per channel if given."""
    metadata = read_metadata(weights)
    codes = metadata.get(CHANNEL_CODES)
    return (BYTE_PLANES in metadata) == half and (json.loads(codes)["bits"] if codes else None) == bits


def _checked_ranker(
    run: Path, kind: Kind, meta: dict, ranker: Path | None
) -> tuple[torch.nn.Module | None, Path | None]:
    """The image ranker to carry, loaded, and its weights file: the one given or a model folder's own."""
    ranker = ranker or own_ranker_files(run)[0]  # re-exporting a model folder keeps its ranker, shared or not
    if ranker is None:
        return None, None
    return load_ranker(ranker, meta["objects"]), ranker_weights(ranker)  # refuses the evaluator, other vocabularies


def _checked_ranker_counter(
    run: Path, kind: Kind, meta: dict, counter: Path | None, has_ranker: bool
) -> tuple[ObjectCounter | None, Path | None]:
    """The image ranker's object counter to carry, loaded, and its weights file: the one given (beside an image
    ranker) or a model folder's own."""
    counter = counter or own_ranker_files(run)[1]  # re-exporting a model folder keeps its ranker's counter
    if counter is None:
        return None, None
    if not has_ranker:
        raise CondgenError("--ranker-counter: the counter ranks beside an image ranker; give --ranker RUN too")
    # refuses the shipped counter and other vocabularies
    return load_ranker_counter(counter, meta["objects"]), ranker_counter_weights(counter)


# settings naming what a run learnt from (a distill teacher, the run a GAN started from, its reward's readers): a
# model folder keeps them as a record and never reads them
SOURCE_SETTINGS = (("teacher",), ("init",), ("reward", "ranker"), ("reward", "counter"))


def _record_sources(config: dict) -> None:
    """Writes the :data:`SOURCE_SETTINGS` that training made absolute relative to the working directory where they
    lie beneath it, as run.json's ``exported_from``: a model folder carries no machine's absolute paths."""
    for *sections, key in SOURCE_SETTINGS:
        settings = config
        for section in sections:
            settings = settings.get(section) or {}
        value = settings.get(key)
        if value and Path(value).is_absolute() and Path(value).is_relative_to(Path.cwd()):
            settings[key] = str(Path(value).relative_to(Path.cwd()))


def _exported_meta(source: Path, meta: dict, step: int) -> dict:
    """A model folder's run.json: the source's, with the layout version, the step and where it came from (a model
    folder exported again keeps its own origin)."""
    origin = meta.get("exported_from", str(source)) if "format" in meta else str(source)
    return meta | {"format": MODEL_FORMAT, "exported_from": origin, "step": step}


def _export_part(run: Path, target: Path, half: bool) -> None:
    """A run a model folder carries (a latent model's autoencoder, a noisy classifier) as a model folder of its own:
    best weights, run.json and config.yaml, a classifier's autoencoder being the model folder's own."""
    meta = read_run(run)
    step = _export_weights(run, meta["kind"], "best", ["model.safetensors"], target, half)
    write_json(target / "run.json", _exported_meta(run, meta, step))
    config = yaml.safe_load((run / "config.yaml").read_text())
    if "autoencoder" in config:
        config["autoencoder"] = "../autoencoder"
        (target / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    else:
        shutil.copy(run / "config.yaml", target / "config.yaml")


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
