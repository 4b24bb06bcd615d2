"""Diffusion processes: Gaussian (DDPM, DDIM, guidance), rectified flow, masked diffusion (LLaDA)."""
