"""Training-step speed of diffusion configs: forward, backward and AdamW step of the config's UNet on random
batches of its batch size, in float32 and under bfloat16 autocast, timed on this machine's device.

Random inputs keep data loading out of the figure, so it is the network's ceiling; a real run also loads batches
and updates the EMA. Run by hand:
    python benchmarks/train_speed.py [--configs configs/ddpm_cpu.yaml,configs/ddpm_gpu.yaml] [--precisions fp32,bf16]
Writes benchmarks/results/train_speed_<cpu|gpu>.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import result_header, write_result

from condgen.device import resolve_device
from condgen.diffusion.trainer import DDPMRunConfig
from condgen.diffusion.unet import UNet
from condgen.parser import non_negative_int, positive_int
from condgen.train.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def images_per_second(config: DDPMRunConfig, device: torch.device, bf16: bool, warmup: int, steps: int) -> float:
    """Training images per second over ``steps`` timed steps, after ``warmup`` untimed ones (allocation, caches)."""
    torch.manual_seed(0)
    model = UNet(config.model).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.lr)
    n, m = config.optim.batch_size, config.model
    x = torch.randn(n, m.in_channels, m.image_size, m.image_size, device=device)
    t = torch.randint(0, config.diffusion.num_steps, (n,), device=device)
    labels = (torch.rand(n, m.num_labels, device=device) < 0.1).float()
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            loss = (model(x, t, labels) - x).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="configs/ddpm_cpu.yaml,configs/ddpm_gpu.yaml", help="comma-separated")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated subset of fp32,bf16")
    parser.add_argument("--warmup", type=non_negative_int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--steps", type=positive_int, default=10, help="timed steps (default 10)")
    args = parser.parse_args()

    configs, precisions = args.configs.split(","), args.precisions.split(",")
    for path in configs:
        if not (ROOT / path).is_file():
            parser.error(f"--configs: no such file {path}")
    for precision in precisions:
        if precision not in ("fp32", "bf16"):
            parser.error(f"--precisions: fp32 or bf16, got {precision!r}")

    device = resolve_device("auto")
    results = {}
    for path in configs:
        config = load_config(DDPMRunConfig, ROOT / path)
        for precision in precisions:
            speed = images_per_second(config, device, precision == "bf16", args.warmup, args.steps)
            results.setdefault(path, {})[precision] = round(speed, 1)
            print(f"{path} {precision}: {speed:.1f} train images/s (batch {config.optim.batch_size})", flush=True)
    name = f"train_speed_{device.type.replace('cuda', 'gpu')}"
    write_result(name, {**result_header(device), "images_per_second": results})


if __name__ == "__main__":
    main()
