"""Latent diffusion: autoencoders (VAE, VQ-VAE) and a conditional diffusion model in their latent space."""
