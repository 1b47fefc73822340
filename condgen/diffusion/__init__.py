"""Conditional diffusion: schedules, the Gaussian process, the UNet, samplers and guidance."""
