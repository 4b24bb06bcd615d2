"""Evaluation of generated images offline: a locally trained feature net, Fréchet distance,
class-consistency accuracy, sample grids."""
