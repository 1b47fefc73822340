"""A benchmark's result file as `condgen export --result` reads it: the sampling a model folder defaults to, the
commands that trained the run, the machine and time budget they ran under, and the score rows of its model card.

Two layouts are read: a diffusion benchmark's (``benchmarks/latent.py``, ``benchmarks/diffusion.py``: one entry per
sampler under ``samplers``, the stages' records under ``autoencoder``, ``classifier``, ``ranker``, ``diffusion``)
and a file of several models (``benchmarks/gan.py``: ``models``, one entry each, chosen with ``--entry``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from condgen.data.jsonio import read_json
from condgen.errors import CondgenError

# the label files a benchmark scores, by the key its result uses, and how a card's table heads them
LABEL_FILES = {
    "test": "test.json",
    "new_test": "new_test.json",
    "unseen_triples": "unseen",
    "unseen_goal": "unseen (scoring half)",
    "seen_triples": "seen",
}
RANKING_KEYS = ("candidates", "classifier_scale", "classifier_absent_scale")  # what a classifier or ranker serves
SELECTION_FILE = "seen_triples"  # a default sampler is chosen on train.json's sets, never on the test files
# the stages a benchmark trains before its generator, as a card names them
STAGES = {
    "autoencoder": "the autoencoder",
    "classifier": "the noisy latent classifier",
    "ranker": "the image ranker",
    "ranker_counter": "the image ranker's object counter",
}


@dataclass(frozen=True)
class BenchmarkRecord:
    """One model's record in a result file: ``result`` is its entry, ``path`` the file."""

    path: Path
    result: dict
    commands: tuple[str, ...]

    @classmethod
    def read(cls, path: Path, entry: str | None = None) -> BenchmarkRecord:
        """The record of ``path`` (``entry`` names the model in a file of several)."""
        result = read_json(path)
        if not isinstance(result, dict) or not ({"models", "samplers"} & result.keys() or "accuracy_test" in result):
            raise CondgenError(f"{path}: not a benchmark result (no samplers, models or scores)")
        if "models" not in result:
            if entry is not None:
                raise CondgenError(f"--entry: {path} holds one model; drop --entry")
            return cls(path, result, (result["command"],))
        models = result["models"]
        if entry not in models:
            raise CondgenError(f"--entry: {path} holds several models; name one of: {', '.join(models)}")
        scored = models[entry]
        trained = models.get(entry.split("_best_of_")[0], scored)  # a rescored run's training
        started = trained.get("started", {}).get("from")  # a fine-tune's: the run it started from, trained first
        first = [models[started]["command"]] if started in models else []
        return cls(path, scored, tuple(dict.fromkeys([*first, trained["command"], scored["command"]])))

    @property
    def is_diffusion(self) -> bool:
        return "samplers" in self.result

    def chosen_sampler(self, sampler: str | None) -> str:
        """``sampler``, checked, or the benchmark's most accurate on the seen triples (train.json's sets)."""
        samplers = self.result["samplers"]
        if sampler is None:
            return max(
                samplers, key=lambda s: samplers[s].get(f"accuracy_{SELECTION_FILE}", samplers[s]["accuracy_test"])
            )
        if sampler not in samplers:
            raise CondgenError(f"--sampler: {self.path} scored {', '.join(samplers)}, not {sampler}")
        return sampler

    def config_changes(self, sampler: str | None) -> dict:
        """What the model folder's config.yaml takes from the record: a diffusion model's ``sample`` section for the
        chosen sampler (its classifier's or ranker's settings included), a GAN's ``candidates``."""
        if not self.is_diffusion:
            return {"candidates": self.result.get("candidates", 1)}
        name = self.chosen_sampler(sampler)
        scored = self.result["samplers"][name]
        settings = {"sampler": name, "steps": scored["steps"], "guidance": scored["guidance"]}
        settings |= {key: scored[key] for key in ("eta", "spacing") if key in scored}
        settings |= self.ranking_settings()
        return {"sample": settings | {"guidance_min_t": self.result.get("guidance_min_t", 0), "seed": 0}}

    def ranking_settings(self) -> dict:
        """The guidance and ranking settings the benchmark scored its noisy classifier or image ranker with."""
        if not (self.result.get("classifier") or self.result.get("ranker")):
            return {}
        sample = self.result["diffusion"]["config"]["sample"]
        return {key: sample[key] for key in RANKING_KEYS}

    def rows(self, ranked_by_image: bool = False, counted: bool = False) -> list[tuple[str, dict]]:
        """(row name, scores) per sampler of a diffusion record; the one row of a GAN's, whose candidates its critic
        ranks, or an image ranker (and its counter if ``counted``) if ``ranked_by_image``."""
        if not self.is_diffusion:
            k = self.result.get("candidates", 1)
            by = "its critic"
            if ranked_by_image:
                by = "the image ranker and its counter" if counted else "the image ranker"
            return [("generator (one forward pass)" if k == 1 else f"generator, best of {k} by {by}", self.result)]
        interval = f" at t >= {self.result['guidance_min_t']}" if self.result.get("guidance_min_t") else ""
        ranked = self.ranking_settings().get("candidates", 1)
        best_of = f", best of {ranked}" if ranked > 1 else ""
        return [
            (f"{name}-{s['steps']}, guidance {s['guidance']:g}{interval}{best_of}", s)
            for name, s in self.result["samplers"].items()
        ]

    def seeds(self) -> int:
        return len(self.rows()[0][1]["accuracy_test_by_seed"])

    def budget(self) -> str:
        """The machine, date and time budget the record names, as a sentence's end."""
        r = self.result
        if "budget_minutes" in r:
            time = f"within a {r['budget_minutes']:g}-minute wall-clock budget"
        else:
            minutes = r.get("minutes_until_sampling", r.get("train_minutes", 0))
            time = f"in {minutes:g} minutes of wall-clock time before sampling"
        return f"{time} on {r['machine']} ({r['date']})"

    def stages(self) -> list[str]:
        """One line per trained stage, from the stages' own records."""
        r, lines = self.result, []
        for key, name in STAGES.items():
            stage = r.get(key)
            if isinstance(stage, dict) and "train_seconds" in stage:
                steps = f"{stage['train_steps']} steps in " if "train_steps" in stage else ""
                lines.append(f"{name}: {steps}{stage['train_seconds'] / 60:.1f} minutes{held_out(stage)}")
        if self.is_diffusion:
            d = r["diffusion"]
            lines.append(
                f"the diffusion model: {d['train_steps']} steps of {d['config']['optim']['batch_size']} in "
                f"{d['train_seconds'] / 60:.1f} minutes ({d['train_images_per_second']:.1f} images/s)"
            )
        else:
            if "started" in r:  # a fine-tune: the run it started from, then encoding the training set again
                started = r["started"]
                lines.append(
                    f"the {started['from']} run, until the checkpoint it started from: {started['from_minutes']:.1f} "
                    "minutes"
                )
                lines.append(f"encoding the training set: {started['encode_minutes']:.1f} minutes")
            best_by = "exact-set rate" if r["config"]["loop"].get("best_by") == "exact_set" else "accuracy"
            reward = r["config"].get("reward", {}).get("weight", 0)
            tuned = f", tuned by the image ranker's reward (weight {reward:g})" if reward else ""
            kept = (
                f"the EMA generator it ended with, step {r['train_steps']}"
                if r.get("checkpoint") == "latest"
                else f"the EMA generator of its checkpoint with the best periodic {best_by} on label sets of training "
                f"images, step {r['best_step']}"
            )
            lines.append(
                f"the GAN{tuned}: {r['train_steps']} generator steps of {r['config']['optim']['batch_size']} in "
                f"{r['train_minutes']:.1f} minutes; {kept}"
            )
        return lines


def held_out(stage: dict) -> str:
    """A stage's held-out score, where its record has one."""
    if "best_held_out_scores" in stage:  # an autoencoder: the evaluator's accuracy kept by its reconstructions
        return f" (its reconstructions keep {stage['best_held_out_scores']['accuracy_ratio']:.3f} of the accuracy)"
    scores = stage.get("held_out", {})
    if "real_count_accuracy" in scores:  # an object counter
        return f" (counts {scores['real_count_accuracy']:.3f} of held-out real images right)"
    exact = scores.get("exact_set", scores.get("exact_set_t0"))
    return f" (exact-set rate {exact:.3f} on held-out data)" if exact is not None else ""
