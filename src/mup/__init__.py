"""The μP core: model-agnostic rules that turn (model shapes, parametrization, optimizer) into
init, forward multipliers and named parameter groups."""
