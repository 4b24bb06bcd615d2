"""Jobs a run can be (the root key ``job``): each builds what it needs from the config, writes its
outputs into the run dir and returns the run's record."""

from src.jobs.coord_check import coord_check
from src.jobs.train import train
from src.jobs.vrpo_variance import vrpo_variance

JOBS = {"train": train, "coord_check": coord_check, "vrpo_variance": vrpo_variance}
