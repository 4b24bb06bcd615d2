"""The Monte Carlo estimator core shared by diffusion training and VRPO: replayable timestep and noise draws."""
