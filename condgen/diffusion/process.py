"""The Gaussian diffusion process of Ho et al. 2020 (DDPM): forward noising, posterior, and the training loss.

Time is a 0-based index: ``t = 0 .. T-1`` stands for the paper's t = 1 .. T (the convention of diffusers and
improved-diffusion). All schedule arithmetic is float64; results are cast to the input's dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

import torch


class Prediction(str, Enum):
    EPSILON = "epsilon"  # the network predicts the noise (Ho et al. 2020)
    V = "v"  # the network predicts v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 (Salimans & Ho 2022)


class PosteriorVariance(str, Enum):
    BETA = "beta"  # sigma_t^2 = beta_t, the upper bound (Ho et al. 2020, section 3.2)
    BETA_TILDE = "beta_tilde"  # sigma_t^2 = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t, the lower bound


class GaussianDiffusion:
    """Holds a schedule's derived quantities; is handed the network output, never the network itself."""

    def __init__(
        self,
        betas: torch.Tensor,
        prediction: Prediction | str = Prediction.EPSILON,
        variance: PosteriorVariance | str = PosteriorVariance.BETA,
        min_snr_gamma: float = 0.0,
    ):
        self.betas = betas.double()
        self.min_snr_gamma = min_snr_gamma
        self.num_steps = len(betas)
        self.prediction = Prediction(prediction)
        self.variance = PosteriorVariance(variance)
        self.alphas = 1.0 - self.betas
        self.alpha_bar = torch.cumprod(self.alphas, dim=0)
        self.alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])
        # Ho et al. eq. 7: q(x_{t-1} | x_t, x_0) = N(coef_x0 x_0 + coef_xt x_t, beta_tilde_t I)
        self.beta_tilde = self.betas * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)
        self.posterior_coef_x0 = self.betas * self.alpha_bar_prev.sqrt() / (1 - self.alpha_bar)
        self.posterior_coef_xt = (1 - self.alpha_bar_prev) * self.alphas.sqrt() / (1 - self.alpha_bar)

    @staticmethod
    def gather(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """values[t] shaped to broadcast against ``like`` (B, C, H, W)."""
        return values.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Ho et al. eq. 4: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps."""
        return self.gather(self.alpha_bar.sqrt(), t, x0) * x0 + self.gather((1 - self.alpha_bar).sqrt(), t, x0) * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Ho et al. eq. 6-7: mean and variance of q(x_{t-1} | x_t, x_0); the variance follows ``self.variance``."""
        mean = self.gather(self.posterior_coef_x0, t, xt) * x0 + self.gather(self.posterior_coef_xt, t, xt) * xt
        variance = self.betas if self.variance is PosteriorVariance.BETA else self.beta_tilde
        return mean, self.gather(variance, t, xt)

    def predict_x0(self, xt: torch.Tensor, t: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """x_0 from the network output: (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar), or
        sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v for v prediction."""
        a, s = self.gather(self.alpha_bar.sqrt(), t, xt), self.gather((1 - self.alpha_bar).sqrt(), t, xt)
        if self.prediction is Prediction.EPSILON:
            return (xt - s * output) / a
        return a * xt - s * output

    def predict_eps(self, xt: torch.Tensor, t: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """eps from the network output: itself, or sqrt(1 - alpha_bar) x_t + sqrt(alpha_bar) v."""
        if self.prediction is Prediction.EPSILON:
            return output
        a, s = self.gather(self.alpha_bar.sqrt(), t, xt), self.gather((1 - self.alpha_bar).sqrt(), t, xt)
        return s * xt + a * output

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.prediction is Prediction.EPSILON:
            return noise
        return self.gather(self.alpha_bar.sqrt(), t, x0) * noise - self.gather((1 - self.alpha_bar).sqrt(), t, x0) * x0

    def loss_weights(self, t: torch.Tensor) -> torch.Tensor:
        """Min-SNR-gamma weighting (Hang et al. 2023, eq. 9 and section 3.4): with SNR = alpha_bar / (1 - alpha_bar),
        w = min(SNR, gamma) / SNR for epsilon prediction and min(SNR, gamma) / (SNR + 1) for v prediction, so the
        easy low-noise steps stop dominating the gradient. gamma = 0 turns it off (w = 1, Ho et al.'s simple loss)."""
        if self.min_snr_gamma <= 0:
            return torch.ones(len(t), dtype=torch.float64)
        snr = (self.alpha_bar / (1 - self.alpha_bar))[t.cpu()]
        denominator = snr if self.prediction is Prediction.EPSILON else snr + 1
        return snr.clamp(max=self.min_snr_gamma) / denominator

    def training_loss(
        self,
        model: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        x0: torch.Tensor,
        labels: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Ho et al. Algorithm 1: || target - model(x_t, t, y) ||^2 at a uniform random t, per-sample weighted by
        :meth:`loss_weights`."""
        t = torch.randint(0, self.num_steps, (len(x0),), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        prediction = model(self.q_sample(x0, t, noise), t, labels)
        per_sample = (prediction - self.training_target(x0, noise, t)).square().flatten(1).mean(dim=1)
        return (self.loss_weights(t).to(per_sample) * per_sample).mean()
