"""Sweeps: collect every job's metrics.json, analyse learning-rate transfer, plot and report."""
