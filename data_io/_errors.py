"""Errors the user can fix. The CLIs print them as one line and exit with code 2."""

from __future__ import annotations


class UserInputError(ValueError):
    """A problem in a file or a flag that the user can fix; the message says how."""


class DataError(UserInputError):
    """The data file cannot be used as it is."""


class ConfigError(UserInputError):
    """A flag or config-file value is out of range or inconsistent."""
