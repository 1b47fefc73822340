"""Sampling-settings sweep: how a trained ddpm or ldm run's accuracy depends on the classifier-free guidance scale,
the step below which guidance is left out (sample.guidance_min_t), the bound the samplers clamp x_0 predictions to
(sample.clip_x0), the sampler's eta (fresh noise per step) and the spacing of its steps, measured like the
benchmarks' guidance selection: on label lists drawn from train.json (128, permutation seed 0, any number of objects,
unless --lists, --list-seed and --objects say otherwise), never the test files, with DPM-Solver++(2M)-20 unless
--sampler and --steps say otherwise.

Run by hand:
    python benchmarks/sampling.py --run runs/bench_ldm [--guidance 8,12,16] [--clip 1,1.5,2,3,0]
    python benchmarks/sampling.py --run runs/bench_diffusion_p4v --sampler ddim --steps 50 --eta 0,1 --guidance 5
    python benchmarks/sampling.py --run runs/bench_diffusion_p4v --spacing trailing,quadratic --guidance 5 \
        --lists 512 --list-seed 1
    python benchmarks/sampling.py --run runs/bench_diffusion_p4v --guidance-min-t 0,100 --guidance 5,8 --objects 3
Writes benchmarks/results/<name>.json (default sampling_<run folder name>; --results names another folder): the
accuracy for every combination of spacing, eta, clip bound and guidance_min_t (one row each), by guidance scale.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from pathlib import Path

from common import DATA, add_results_argument, float_list, int_list, result_header, write_result

from condgen.diffusion.options import Spacing
from condgen.diffusion.selection import SELECTION_LABELS, choose_guidance, image_maker
from condgen.evaluate.evaluator import load_evaluator
from condgen.generate import load_generator
from condgen.kinds import Generation
from condgen.parser import non_negative_int, positive_int


def spacing_list(text: str) -> list[Spacing]:
    """A comma-separated command-line list of step spacings, "trailing,quadratic"."""
    try:
        return [Spacing(value) for value in text.split(",")]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{error}; choose from {', '.join(s.value for s in Spacing)}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a trained ddpm or ldm run")
    parser.add_argument("--checkpoint", default="latest", help="latest (the benchmarks score it) or best")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--guidance", type=float_list, default=[8.0, 12.0, 16.0], help="comma-separated scales")
    parser.add_argument(
        "--guidance-min-t",
        type=int_list,
        default=[0],
        help="comma-separated steps below which guidance is left out (sample.guidance_min_t); 0 = none (default)",
    )
    parser.add_argument("--clip", type=float_list, default=[1.0], help="comma-separated x_0 bounds; 0 = no bound")
    parser.add_argument("--sampler", choices=["ddpm", "ddim", "dpmpp"], default="dpmpp", help="default dpmpp")
    parser.add_argument(
        "--steps", type=positive_int, default=20, help="sampler steps (default 20; ddpm always takes T)"
    )
    parser.add_argument("--eta", type=float_list, default=[0.0], help="comma-separated eta values (ddim, dpmpp)")
    parser.add_argument(
        "--spacing",
        type=spacing_list,
        default=[Spacing.TRAILING],
        help="comma-separated step spacings (ddim, dpmpp): leading, trailing, linspace, quadratic (default trailing)",
    )
    parser.add_argument("--lists", type=positive_int, default=SELECTION_LABELS, help="train.json label lists (128)")
    parser.add_argument("--list-seed", type=non_negative_int, default=0, help="which lists: a permutation seed (0)")
    parser.add_argument("--objects", type=positive_int, help="only lists of this many objects (default: any)")
    parser.add_argument("--name", help="result name (default: sampling_<run folder name>)")
    add_results_argument(parser)
    args = parser.parse_args()

    loaded = load_generator(args.run, args.checkpoint, Generation.DIFFUSION)
    config, meta, diffusion = loaded.config, loaded.meta, loaded.diffusion
    device = next(loaded.model.parameters()).device
    evaluator = load_evaluator(device=device)

    make_images = image_maker(loaded)
    rows = []
    for spacing, eta, bound, min_t in itertools.product(args.spacing, args.eta, args.clip, args.guidance_min_t):
        settings = {"spacing": spacing, "eta": eta, "clip_x0": bound, "guidance_min_t": min_t}
        described = settings | {"spacing": spacing.value}
        print(", ".join(f"{key} {value}" for key, value in described.items()) + ":", flush=True)
        sample = dataclasses.replace(config.sample, sampler=args.sampler, steps=args.steps, **settings)
        selection = choose_guidance(
            make_images, sample, evaluator, args.data, args.guidance, args.lists, args.list_seed, args.objects
        )
        rows.append(described | {"accuracy_by_guidance": selection["accuracy_by_scale"]})
    record = {
        **result_header(device),
        "run": {"kind": meta["kind"], "checkpoint": args.checkpoint, "train_data": meta["data"]},
        "label_lists": selection["label_lists"],
        "sampler": f"{args.sampler}-{diffusion.num_steps if args.sampler == 'ddpm' else args.steps}",
        "accuracy": rows,
    }
    write_result(args.name or f"sampling_{args.run.name}", record, args.results)


if __name__ == "__main__":
    main()
