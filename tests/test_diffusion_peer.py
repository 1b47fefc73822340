"""Our schedules, forward process and sampler updates against diffusers' schedulers on the same inputs."""

import pytest
import torch

from condgen.diffusion.process import GaussianDiffusion
from condgen.diffusion.samplers import sample_ddim, sample_ddpm, sample_dpmpp_2m, timesteps
from condgen.diffusion.schedules import cosine_alpha_bar_betas, cosine_interpolated_betas, linear_betas

diffusers = pytest.importorskip("diffusers")  # a test-only dependency: pip install -e ".[test]"

T = 1000


def dummy_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in for a network, as diffusers' scheduler tests use."""
    return 0.3 * x * torch.cos(t.float() / 97)[:, None, None, None] + 0.05


def noise_image(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("steps", [500, 1000])
def test_schedules_match_diffusers(steps):
    linear = diffusers.DDPMScheduler(num_train_timesteps=steps, beta_schedule="linear")
    cosine = diffusers.DDPMScheduler(num_train_timesteps=steps, beta_schedule="squaredcos_cap_v2")
    assert torch.allclose(linear_betas(steps).float(), linear.betas, atol=1e-7)
    assert torch.allclose(cosine_alpha_bar_betas(steps).float(), cosine.betas, atol=1e-6)
    assert torch.allclose(
        GaussianDiffusion(cosine_alpha_bar_betas(steps)).alpha_bar.float(), cosine.alphas_cumprod, atol=1e-6
    )


def test_cosine_interpolated_betas_follow_their_formula():
    betas = cosine_interpolated_betas(500, 1e-4, 0.02)
    assert betas[-1] == pytest.approx(0.02) and betas[0] == pytest.approx(1e-4, abs=1e-6)
    assert betas[249] == pytest.approx(1e-4 + (0.02 - 1e-4) / 2, rel=1e-2)
    assert (betas.diff() > 0).all()


def test_q_sample_matches_add_noise():
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2")
    diffusion = GaussianDiffusion(cosine_alpha_bar_betas(T))
    x0, noise = noise_image(1).clamp(-1, 1), noise_image(2)
    t = torch.tensor([0, 999])
    assert torch.allclose(diffusion.q_sample(x0, t, noise), scheduler.add_noise(x0, noise, t), atol=1e-5)


@pytest.mark.parametrize(("variance", "diffusers_variance"), [("beta", "fixed_large"), ("beta_tilde", "fixed_small")])
@pytest.mark.parametrize(("prediction", "diffusers_prediction"), [("epsilon", "epsilon"), ("v", "v_prediction")])
def test_ddpm_loop_matches_diffusers(variance, diffusers_variance, prediction, diffusers_prediction):
    steps = 50
    scheduler = diffusers.DDPMScheduler(
        num_train_timesteps=steps,
        beta_schedule="linear",
        beta_start=1e-3,
        beta_end=0.2,
        variance_type=diffusers_variance,
        prediction_type=diffusers_prediction,
        clip_sample=True,
    )
    diffusion = GaussianDiffusion(linear_betas(steps, 1e-3, 0.2), prediction, variance)
    ours = sample_ddpm(dummy_eps, diffusion, noise_image(), generator=torch.Generator().manual_seed(5))

    x, generator = noise_image(), torch.Generator().manual_seed(5)
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        x = scheduler.step(dummy_eps(x, t.repeat(len(x))), t, x, generator=generator).prev_sample
    assert torch.allclose(ours, x, atol=1e-5)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_loop_matches_diffusers(spacing, eta):
    scheduler = diffusers.DDIMScheduler(
        num_train_timesteps=T,
        beta_schedule="squaredcos_cap_v2",
        clip_sample=True,
        set_alpha_to_one=True,
        timestep_spacing=spacing,
    )
    diffusion = GaussianDiffusion(cosine_alpha_bar_betas(T))
    ours = sample_ddim(
        dummy_eps,
        diffusion,
        noise_image(),
        steps=50,
        eta=eta,
        spacing=spacing,
        generator=torch.Generator().manual_seed(3),
    )
    scheduler.set_timesteps(50)
    assert scheduler.timesteps.tolist() == timesteps(T, 50, spacing)
    x, generator = noise_image(), torch.Generator().manual_seed(3)
    for t in scheduler.timesteps:
        output = scheduler.step(
            dummy_eps(x, t.repeat(len(x))), t, x, eta=eta, use_clipped_model_output=True, generator=generator
        )
        x = output.prev_sample
    assert torch.allclose(ours, x, atol=1e-5)


@pytest.mark.parametrize("spacing", ["trailing", "quadratic"])
@pytest.mark.parametrize(("eta", "algorithm"), [(0.0, "dpmsolver++"), (1.0, "sde-dpmsolver++")])
def test_dpmpp_2m_matches_diffusers(eta, algorithm, spacing):
    scheduler = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=T,
        beta_schedule="squaredcos_cap_v2",
        algorithm_type=algorithm,
        solver_order=2,
        final_sigmas_type="zero",
        timestep_spacing="trailing",
    )
    diffusion = GaussianDiffusion(cosine_alpha_bar_betas(T))
    generator = torch.Generator().manual_seed(4)
    ours = sample_dpmpp_2m(
        dummy_eps, diffusion, noise_image(), steps=20, eta=eta, spacing=spacing, generator=generator, clip_x0=None
    )
    if spacing == "trailing":
        scheduler.set_timesteps(20)
        assert scheduler.timesteps.tolist() == timesteps(T, 20, "trailing")
    else:  # diffusers has no quadratic spacing, but takes any decreasing steps
        scheduler.set_timesteps(timesteps=timesteps(T, 20, spacing))
    x, generator = noise_image(), torch.Generator().manual_seed(4)
    for t in scheduler.timesteps:
        x = scheduler.step(dummy_eps(x, t.repeat(len(x))), t, x, generator=generator).prev_sample
    # the unbounded dummy model drives x_0 far from [-1, 1], so the comparison is relative
    assert torch.allclose(ours, x, rtol=1e-4, atol=1e-4)


def test_pinned_ddim_result():
    """A full loop with the dummy model, pinned as diffusers' own tests pin theirs."""
    diffusion = GaussianDiffusion(cosine_alpha_bar_betas(T))
    result = sample_ddim(dummy_eps, diffusion, noise_image(), steps=50)
    assert result.abs().sum().item() == pytest.approx(PINNED_DDIM_ABS_SUM, rel=1e-4)
    assert result.mean().item() == pytest.approx(PINNED_DDIM_MEAN, abs=1e-4)


PINNED_DDIM_ABS_SUM = 381.7072  # from this loop, after it matched diffusers above
PINNED_DDIM_MEAN = -0.016379
