"""Argument checks shared by models, data modules and the config checks."""

from __future__ import annotations

from typing import Any


def is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_sizes(**sizes: Any) -> None:
    """Raise ValueError naming the first argument that is not a positive integer."""
    for name, value in sizes.items():
        if not is_positive_int(value):
            raise ValueError(f"{name}={value!r} must be a positive integer")
