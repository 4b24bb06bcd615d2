"""Diffusion processes: Gaussian (DDPM, DDIM, guidance), rectified flow; the masked process later."""
