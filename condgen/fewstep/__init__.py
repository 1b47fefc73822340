"""Few-step generators: one UNet that jumps across the diffusion chain in 1 to 4 network passes, distilled from a
trained latent diffusion model (``condgen train distill``) or trained from scratch (``condgen train shortcut``)."""
