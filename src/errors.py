"""The one error a user sees for a bad config value or input file: one line naming the key, exit code 2."""

from __future__ import annotations


class ConfigError(Exception):
    """A bad config value or input file; reported as one line and exit code 2."""


def one_line(text: object) -> str:
    """A (multi-line) message as one line."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def root_cause(err: BaseException) -> BaseException:
    """The innermost ``__cause__`` of a chain of re-raised exceptions."""
    while err.__cause__ is not None:
        err = err.__cause__
    return err
