"""Hydra instantiates sweepers only from the ``hydra_plugins`` namespace package; this registers the
transfer sweeper of src/sweeps/sweeper.py there (``hydra/sweeper=transfer``)."""

from src.sweeps.sweeper import TransferSweeper as _TransferSweeper


class TransferSweeper(_TransferSweeper):
    """src.sweeps.sweeper.TransferSweeper under the name Hydra accepts."""
