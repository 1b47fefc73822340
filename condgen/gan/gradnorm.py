"""The per-layer gradient-norm diagnostic of WGAN critics: weight clipping against gradient penalty.

Gulrajani et al. 2017 (figure 1b) show that with weight clipping the gradient norms of a deep critic explode or
vanish from layer to layer, while with a gradient penalty they stay within about an order of magnitude. Here a
DCGAN-style critic (four strided convolutions and a linear score, no batch norm) and a generator are trained
against each other on real data under each setting from the same initialisation; every critic update records
||d loss / d W_l|| for each layer l, from input to output.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch

from condgen.data.iclevr import LabeledImages, load_dataset
from condgen.data.imageio import to_signed
from condgen.errors import CondgenError
from condgen.gan.losses import clip_weights, gradient_penalty
from condgen.gan.networks import Discriminator, GANModelConfig, Generator
from condgen.nn.adversarial import d_wasserstein, g_wasserstein
from condgen.progress import progress_bar

SETTINGS = ("weight_clipping", "gradient_penalty")


@dataclass
class GradNormConfig:
    steps: int = 100  # generator updates per setting
    n_critic: int = 5
    batch_size: int = 32
    channels: int = 32
    clip_value: float = 0.01
    gp_lambda: float = 10.0
    seed: int = 0


def gradnorm_report(
    data_root: Path, out: Path, config: GradNormConfig
) -> tuple[dict[str, dict[str, float]], Path, Path]:
    """``condgen gradnorm``: measures every setting on the dataset ``data_root`` and writes ``out/gradnorm.csv`` and
    ``out/gradnorm.png``; returns the norms (setting -> layer -> norm) and the two files. An ``out`` that already
    holds a gradnorm.csv is refused before any training."""
    if (out / "gradnorm.csv").exists():
        raise CondgenError(f"{out}: already holds gradnorm.csv; choose another --out")
    data = load_dataset(data_root)
    norms = {setting: measure(data, setting, config) for setting in SETTINGS}
    csv_path, png_path = write_report(norms, out)
    return norms, csv_path, png_path


def format_norms(norms: dict[str, dict[str, float]]) -> str:
    """One line per setting: each layer's gradient norm, from input to output."""
    return "\n".join(
        f"{setting:>17}: " + "  ".join(f"{k} {v:.3g}" for k, v in values.items()) for setting, values in norms.items()
    )


def critic_layers(critic: Discriminator) -> list[tuple[str, torch.nn.Parameter]]:
    """The critic's weight matrices from input to output, with readable names."""
    named = [(f"conv{i + 1}", layer.weight) for i, layer in enumerate(critic.layers)]
    return named + [("score", critic.score.weight)]


def measure(data: LabeledImages, setting: str, config: GradNormConfig, progress: bool = True) -> dict[str, float]:
    """Trains under ``setting`` and returns each layer's gradient norm, averaged over the second half of training
    (the first half lets the critic settle into the regime its constraint produces)."""
    torch.manual_seed(config.seed)
    model = GANModelConfig(architecture="dcgan", g_channels=config.channels, d_channels=config.channels)
    generator, critic = Generator(model), Discriminator(model)
    if setting == "weight_clipping":  # Arjovsky et al.: RMSprop, clip after every critic update
        opt_g = torch.optim.RMSprop(generator.parameters(), lr=5e-5)
        opt_d = torch.optim.RMSprop(critic.parameters(), lr=5e-5)
        clip_weights(critic, config.clip_value)
    else:  # Gulrajani et al.: Adam(1e-4, betas (0, 0.9))
        opt_g = torch.optim.Adam(generator.parameters(), lr=1e-4, betas=(0.0, 0.9))
        opt_d = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.0, 0.9))
    random = torch.Generator().manual_seed(config.seed)
    layers = critic_layers(critic)
    sums = dict.fromkeys((name for name, _ in layers), 0.0)
    counted = 0
    for step in progress_bar(range(config.steps), desc=setting, enabled=progress):
        for _ in range(config.n_critic):
            index = torch.randint(0, len(data), (config.batch_size,), generator=random)
            real, labels = to_signed(data.images[index]), data.labels[index]
            fake = generator(torch.randn(len(real), model.noise_dim, generator=random), labels).detach()
            loss = d_wasserstein(critic(real, labels)[0], critic(fake, labels)[0])
            if setting == "gradient_penalty":
                score = lambda x, y: critic(x, y)[0]  # noqa: E731
                loss = loss + config.gp_lambda * gradient_penalty(score, real, fake, labels, random)
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            if step >= config.steps // 2:
                for name, weight in layers:
                    sums[name] += weight.grad.norm().item()
                counted += 1
            opt_d.step()
            if setting == "weight_clipping":
                clip_weights(critic, config.clip_value)
        labels = data.labels[torch.randint(0, len(data), (config.batch_size,), generator=random)]
        fake = generator(torch.randn(len(labels), model.noise_dim, generator=random), labels)
        g_loss = g_wasserstein(critic(fake, labels)[0])
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
    return {name: total / max(1, counted) for name, total in sums.items()}


def write_report(norms: dict[str, dict[str, float]], out: Path) -> tuple[Path, Path]:
    """Writes ``gradnorm.csv`` (one row per layer) and ``gradnorm.png`` (one curve per setting, log y)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    layers = list(next(iter(norms.values())))
    csv_path, png_path = out / "gradnorm.csv", out / "gradnorm.png"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["layer_index", "layer", *norms])
        for i, layer in enumerate(layers):
            writer.writerow([i, layer, *(f"{norms[s][layer]:.6g}" for s in norms)])
    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    for setting, values in norms.items():
        axes.plot(range(len(layers)), [values[layer] for layer in layers], marker="o", label=setting.replace("_", " "))
    axes.set_yscale("log")
    axes.set_xticks(range(len(layers)), layers)
    axes.set_xlabel("critic layer (input to output)")
    axes.set_ylabel("gradient norm of the critic loss")
    axes.set_title("WGAN critic: weight clipping vs gradient penalty")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(png_path)
    plt.close(figure)
    return csv_path, png_path
