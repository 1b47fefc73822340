"""`condgen export`: a run (or model folder) as a model folder with its default sampling, its precision and its
model card decided: from a benchmark's result file where one is given (``--result``), by a measured float16 check
where asked (``--half auto``)."""

from __future__ import annotations

import shlex
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import yaml

from condgen.errors import CondgenError
from condgen.export.card import model_card
from condgen.export.folder import export_model
from condgen.export.half import half_precision_check
from condgen.export.record import BenchmarkRecord
from condgen.pretrained import PRETRAINED
from condgen.train.runs import read_run


class Half(str, Enum):
    """How a model folder stores its weights."""

    NO = "no"  # float32
    YES = "yes"  # float16, in byte planes (condgen.tensorfile)
    AUTO = "auto"  # float16 unless a measured check finds a lower mean score (condgen.export.half)


@dataclass(frozen=True)
class ExportOptions:
    """What `condgen export` takes beside the run and the target folder."""

    checkpoint: str | None = None  # best | latest; None = best, or latest for a diffusion benchmark's training run
    half: Half = Half.NO
    classifier: Path | None = None  # a noisy classifier run to carry (classifier/)
    ranker: Path | None = None  # an image ranker to carry (ranker.safetensors)
    ranker_counter: Path | None = None  # the ranker's own object counter to carry (ranker_counter.safetensors)
    result: Path | None = None  # the benchmark result that trained and scored the run
    entry: str | None = None  # the run's entry in a result file of several models
    sampler: str | None = None  # the result's sampler to default to (default: its most accurate on train.json's sets)
    check_seeds: int = 3  # noise seeds of the float16 check
    ranker_bits: int | None = None  # the ranker's weights as codes of this many bits per channel (condgen.tensorfile)

    def command_line(self, run: Path, out: Path) -> str:
        """The `condgen export` command that these options spell."""
        words = ["condgen", "export", "--run", str(run), "--out", str(out)]
        words += ["--checkpoint", self.checkpoint] if self.checkpoint else []
        words += {Half.NO: [], Half.YES: ["--half"], Half.AUTO: ["--half", "auto"]}[self.half]
        words += ["--ranker-bits", str(self.ranker_bits)] if self.ranker_bits is not None else []
        for option in ("classifier", "ranker", "ranker_counter", "result", "entry", "sampler"):
            value = getattr(self, option)
            words += [f"--{option.replace('_', '-')}", str(value)] if value is not None else []
        return shlex.join(words)


def export(run: Path, out: Path, options: ExportOptions, command: str | None = None, name: str | None = None) -> Path:
    """Writes ``run``'s model folder to ``out`` (which must not exist) under ``options``, with a model card that names
    ``command`` (default: the `condgen export` command of these options) as how it was made and ``name`` (default:
    ``out``) as what opens it. The folder appears whole or not at all."""
    refuse_target(out, run)
    record = BenchmarkRecord.read(options.result, options.entry) if options.result else None
    checkpoint = options.checkpoint or default_checkpoint(run, record)
    changes = record.config_changes(options.sampler) if record else {}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as scratch:

        def write(name: str, half: bool, ranker_half: bool | None = None) -> Path:
            target = Path(scratch) / name / out.name
            bits = None if name == "float32" else options.ranker_bits  # the check's reference keeps the full ranker
            folder = export_model(
                run,
                target,
                checkpoint,
                half,
                options.classifier,
                options.ranker,
                ranker_half,
                options.ranker_counter,
                bits,
            )
            update_config(folder, changes)
            return folder

        if options.half is Half.AUTO:
            folder, half, ranker_half, check = _measured(write, options.check_seeds)
            if options.ranker_bits is not None and "ranker_choices_changed" in check:
                check["ranker_copy"] = f"{options.ranker_bits}-bit"  # what the check ranked with
        else:
            half = options.half is Half.YES
            folder, ranker_half, check = write("model", half), half, None
        commands = [command or options.command_line(run, out)]
        card = model_card(folder, name or str(out), run, commands, half, ranker_half, record, check)
        (folder / "README.md").write_text(card)
        folder.rename(out)
    return out


def _measured(write, seeds: int) -> tuple[Path, bool, bool, dict]:
    """Both precisions written and checked: the folder to keep, whether its generator and its ranker are float16, and
    the check. Where the generator stays float32, a float16 ranker (with its counter, where it has one) that keeps
    every candidate the float32 one keeps (the same images at half the size) ships beside it."""
    float32, float16 = write("float32", False), write("float16", True)
    check = half_precision_check(float32, float16, seeds)
    if check["float16_no_lower"]:
        return float16, True, True, check
    if check.get("ranker_choices_changed") == 0:
        return write("float32_ranker_float16", False, True), False, True, check
    return float32, False, False, check


def refuse_target(out: Path, run: Path) -> None:
    """Refuses an ``out`` that exists, lies inside the installed package (its shipped models are installed by
    benchmarks/ship.py alone) or inside the folder it exports from (which would then hold a copy of itself)."""
    if out.exists():
        raise CondgenError(f"{out}: already exists; choose a new --out")
    target = out.resolve()
    if target.is_relative_to(PRETRAINED.parent):
        raise CondgenError(f"--out {out}: inside the installed condgen package; choose a folder of your own")
    if target.is_relative_to(run.resolve()):
        raise CondgenError(f"--out {out}: inside {run}, the folder it exports from; choose a folder beside it")


def default_checkpoint(run: Path, record: BenchmarkRecord | None) -> str:
    """A diffusion benchmark scores its training run's latest weights; everything else ships its best."""
    from_training = "format" not in read_run(run)  # a model folder holds one checkpoint
    return "latest" if record is not None and record.is_diffusion and from_training else "best"


def update_config(folder: Path, changes: dict) -> None:
    """Merges ``changes`` into the folder's config.yaml, a section ({"sample": {...}}) key by key."""
    if not changes:
        return
    config = yaml.safe_load((folder / "config.yaml").read_text())
    for key, value in changes.items():
        config[key] = config[key] | value if isinstance(value, dict) else value
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
