"""How classifier-free guidance moves the shipped latent diffusion model's evaluator-feature Fréchet distance and
its accuracy: `condgen report`'s protocol (2,048 real images; 1,024 label sets drawn from the data, seed 0 noise;
DPM-Solver++-20) at several guidance scales.

Run by hand:
    python benchmarks/frechet_guidance.py [--guidance 1,3,8]
Writes benchmarks/results/frechet_guidance_cpu.json (--results and --name say otherwise): per scale the Fréchet
distance, the top-k accuracy on the drawn label sets, and the mean feature norm of the generated images beside the
real images'.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import DATA, add_results_argument, float_list, result_header, write_result

import condgen
from condgen.data.iclevr import load_dataset
from condgen.device import resolve_device
from condgen.evaluate.evaluator import load_evaluator
from condgen.parser import positive_int
from condgen.report import command, measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--model", default="iclevr-ldm", help="a shipped model's name or a model folder")
    parser.add_argument("--guidance", type=float_list, default=[1.0, 3.0, 8.0], help="scales (default 1,3,8)")
    parser.add_argument("--images", type=positive_int, default=1024, help="label sets to generate for (1024)")
    parser.add_argument("--name", default="frechet_guidance_cpu", help="result name (default frechet_guidance_cpu)")
    add_results_argument(parser)
    args = parser.parse_args()
    evaluator = load_evaluator()
    real, labels = command.frechet_reference(load_dataset(args.data, progress=False), args.images, evaluator)
    if real is None:
        parser.error(
            f"--data {args.data}: fewer real images than the evaluator's {command.FEATURES} feature dimensions"
        )
    requests = measure.requests_of(labels, evaluator)
    model = condgen.load(args.model)
    scales = {}
    for guidance in args.guidance:
        images = model.generate(requests, seed=0, sampler="dpmpp", steps=20, guidance=guidance)
        features = evaluator.features(images)
        scales[str(guidance)] = {
            "frechet_distance": measure.fid_to_real(features, real),
            "accuracy": round(evaluator.accuracy(images, labels), 4),
            "mean_feature_norm": round(float(features.norm(dim=1).mean()), 2),
        }
        print(guidance, scales[str(guidance)], flush=True)
    record = {
        **result_header(resolve_device("cpu")),
        "model": args.model,
        "real_images": len(real),
        "generated_images": len(labels),
        "real_mean_feature_norm": round(float(real.norm(dim=1).mean()), 2),
        "by_guidance": scales,
    }
    write_result(args.name, record, args.results)


if __name__ == "__main__":
    main()
