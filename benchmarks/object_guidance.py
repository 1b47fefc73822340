"""Per-object classifier-free guidance against plain guidance, on a trained diffusion model: does steering towards each
requested object on its own lower the share of samples that miss one? Each variant adds w sum_i d_i to the guided
noise prediction eps = e(0) + s (e(c) - e(0)) at the guided steps (t >= guidance_min_t), with c the requested set:

    compose:  d_i = e({i}) - e(0)       the conjunction of Composable Diffusion (Liu et al. 2022, eq. 10), one
                                        single-object condition per requested object
    contrast: d_i = e(c) - e(c \\ {i})   leave one out: what object i adds to a scene that holds the others

Both cost one network call more per requested object at every guided step. Each request of --labels (the unseen
three-object sets by default, never the test files) is sampled --candidates times with DDIM-50, eta 1, noise seed
--seed; the rows give the evaluator's per-sample exact-set rate, the share of samples missing a requested object or
holding an extra one, top-k accuracy, and the exact-set rate of the best of the candidates by the noisy classifier
(--classifier, else the model folder's own: the ranker; the evaluator only scores).

Run by hand:
    python benchmarks/object_guidance.py --run condgen/pretrained/iclevr-ldm --variants plain compose:1 contrast:1
Writes benchmarks/results/<name>.json (default object_guidance_<run folder name>; --results names another folder).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import COMPOSITIONAL, add_results_argument, result_header, sampler_config, sampler_record, write_result

from condgen.data.iclevr import load_label_file
from condgen.diffusion.guidance import Network
from condgen.diffusion.process import GaussianDiffusion
from condgen.diffusion.samplers import EpsFn, bound, sample_ddim
from condgen.diffusion.selection import classifier_likelihood
from condgen.evaluate.evaluator import load_evaluator
from condgen.evaluate.metrics import exact_sets, top_k_accuracy
from condgen.generate import guiding_classifier, load_generator
from condgen.kinds import Generation
from condgen.parser import non_negative_int, positive_int

VARIANTS = ("plain", "compose", "contrast")


def variant(text: str) -> tuple[str, float]:
    """ "contrast:1.5" -> ("contrast", 1.5); "plain" -> ("plain", 0.0)."""
    name, _, weight = text.partition(":")
    if name not in VARIANTS:
        raise argparse.ArgumentTypeError(f"{name!r}: not one of {', '.join(VARIANTS)}")
    try:
        return name, float(weight or 0.0) if name != "plain" else 0.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the weight after ':' is a number") from None


def per_object_conditions(labels: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C) requests -> (M, B, C) conditions, one per requested object slot (M = the most objects in a request), and
    (M, B) which slots hold an object: {i} for compose, c without i for contrast."""
    slots = int(labels.sum(dim=1).max())
    conditions = torch.zeros(slots, *labels.shape)
    valid = torch.zeros(slots, len(labels))
    for row, objects in enumerate(labels):
        for slot, index in enumerate(torch.nonzero(objects).flatten()):
            if name == "compose":
                conditions[slot, row, index] = 1
            else:
                conditions[slot, row] = objects
                conditions[slot, row, index] = 0
            valid[slot, row] = 1
    return conditions, valid


def object_guided_eps_fn(
    model: Network,
    diffusion: GaussianDiffusion,
    labels: torch.Tensor,
    scale: float,
    guidance_min_t: int,
    name: str,
    weight: float,
) -> EpsFn:
    """e(0) + s (e(c) - e(0)) + w sum_i d_i at t >= guidance_min_t (see the module docstring), e(c) below it."""
    conditions, valid = per_object_conditions(labels.cpu(), name) if weight else (torch.zeros(0), torch.zeros(0))
    conditions, valid = conditions.to(labels), valid.to(labels)

    def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if int(t[0]) < guidance_min_t:
            return diffusion.predict_eps(x, t, model(x, t, labels))
        every = torch.cat([labels, torch.zeros_like(labels), *conditions])
        repeats = len(every) // len(x)
        xs, ts = x.repeat(repeats, 1, 1, 1), t.repeat(repeats)
        conditional, unconditional, *per_object = diffusion.predict_eps(xs, ts, model(xs, ts, every)).split(len(x))
        eps = unconditional + scale * (conditional - unconditional)
        for slot, eps_slot in enumerate(per_object):
            direction = eps_slot - unconditional if name == "compose" else conditional - eps_slot
            eps = eps + weight * valid[slot].view(-1, 1, 1, 1) * direction
        return eps

    return eps_fn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a trained ldm or ddpm run (or model folder)")
    parser.add_argument(
        "--classifier", type=Path, help="its classifier or latent-classifier run (default: the model folder's own)"
    )
    parser.add_argument("--checkpoint", default="best", help="latest or best (default: best)")
    parser.add_argument("--labels", type=Path, default=COMPOSITIONAL[0], help="default: the unseen triples")
    parser.add_argument(
        "--variants",
        type=variant,
        nargs="+",
        default=[variant(v) for v in ("plain", "compose:1", "contrast:1")],
        help="plain, compose:W or contrast:W, each a row (default: plain compose:1 contrast:1)",
    )
    parser.add_argument("--candidates", type=positive_int, default=2, help="samples per request (default 2)")
    parser.add_argument("--guidance", type=float, default=8.0, help="classifier-free guidance scale s (default 8)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--name", help="result name (default: object_guidance_<run folder name>)")
    add_results_argument(parser)
    args = parser.parse_args()

    loaded = load_generator(args.run, args.checkpoint, Generation.DIFFUSION)
    loaded.classifier = guiding_classifier(loaded, args.classifier)
    if loaded.classifier is None:
        parser.error(
            f"--run {args.run}: ranks by a noisy classifier; give --classifier RUN or a model folder that holds one"
        )
    device = next(loaded.model.parameters()).device
    evaluator = load_evaluator(device=device)
    requests = load_label_file(args.labels, evaluator.codec)
    labels = requests.repeat_interleave(args.candidates, dim=0).float()
    sample = sampler_config(loaded.config.sample, "ddim", loaded.diffusion.num_steps)  # DDIM-50, eta 1
    rows = []
    for name, weight in args.variants:
        generator = torch.Generator().manual_seed(args.seed)
        start = time.perf_counter()
        samples = []
        with torch.no_grad():
            for batch in labels.split(64):
                batch = batch.to(device)
                eps_fn = object_guided_eps_fn(
                    loaded.model, loaded.diffusion, batch, args.guidance, sample.guidance_min_t, name, weight
                )
                x = torch.randn(
                    (len(batch), loaded.model.config.in_channels, *2 * [loaded.model.config.image_size]),
                    generator=generator,
                ).to(device)
                x = sample_ddim(
                    eps_fn,
                    loaded.diffusion,
                    x,
                    steps=sample.steps,
                    eta=sample.eta,
                    spacing=sample.spacing,
                    generator=generator,
                    clip_x0=sample.clip_x0,
                )
                samples.append(bound(x, sample.clip_x0).cpu())
            x = torch.cat(samples)
            seconds = time.perf_counter() - start
            images = loaded.decode(x)
            scores = evaluator.scores(images).cpu()
        detected, wanted = scores > 0.5, labels.bool()
        exact = exact_sets(scores, labels).float()
        best = classifier_likelihood(loaded.classifier, x, labels).view(-1, args.candidates).argmax(dim=1)
        row = {
            "variant": name,
            "weight": weight,
            "exact_set_per_sample": exact.mean().item(),
            "missing_an_object": (wanted & ~detected).any(dim=1).float().mean().item(),
            "holding_an_extra_object": (detected & ~wanted).any(dim=1).float().mean().item(),
            "accuracy": top_k_accuracy(scores, labels),
            f"exact_set_best_of_{args.candidates}": exact.view(-1, args.candidates)[torch.arange(len(best)), best]
            .mean()
            .item(),
            "seconds_per_sample": seconds / len(x),
        }
        rows.append({key: round(value, 4) if isinstance(value, float) else value for key, value in row.items()})
        print(rows[-1], flush=True)
    record = {
        **result_header(device),
        "run": str(args.run),
        "classifier": str(args.classifier) if args.classifier else None,
        "labels": f"{len(requests)} from {args.labels.name}, {args.candidates} samples each, noise seed {args.seed}",
        "sampler": sampler_record("ddim", sample, args.guidance),
        "rows": rows,
    }
    write_result(args.name or f"object_guidance_{args.run.name}", record, args.results)


if __name__ == "__main__":
    main()
