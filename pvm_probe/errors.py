"""The project's errors for bad user input: one line each, naming the file, field or argument at fault.

    InputError (ValueError)          bad input: an argument, a config value, an adapter directory
      ConfigError                    one field of a PVMConfig or of an adapter's pvm_config.json
      AdapterError                   an adapter's files: a newer format, corrupted or inconsistent weights
        AdapterMismatchError         the adapter was trained on another base model

Missing files are `FileNotFoundError` (an `OSError`), as Python raises them. A CLI turns `InputError` and
`OSError` into a one-line message and exit code 2; anything else is a bug.
"""

from __future__ import annotations

import re


def one_line(text: str) -> str:
    """`text` with every line break (and the whitespace around it) folded into one space."""
    return re.sub(r"\s*[\r\n]+\s*", " ", str(text)).strip()


def show(value, limit: int = 60) -> str:
    """A short one-line picture of a bad value and its type, for error messages: `'64' (str)`."""
    text = one_line(repr(value))
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{text} ({type(value).__name__})"


class InputError(ValueError):
    """Bad user input. The message is one line: where (file, field or argument) and what was expected."""

    def __init__(self, message: str):
        super().__init__(one_line(message))


class ConfigError(InputError):
    """A config field is missing, unknown, or of the wrong type or range.

    path:    dotted field path, e.g. `pvm.latent_dim` ("" for the whole document)
    problem: what is wrong, e.g. `must be a positive integer, got '64' (str)`
    source:  the file it was read from, or None
    """

    def __init__(self, path: str, problem: str, source: str | None = None):
        self.path, self.problem, self.source = path, problem, source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{path} {problem}" if path else f"{where}{problem}")

    def within(self, prefix: str = "", source: str | None = None) -> ConfigError:
        """The same error, its path put under `prefix` (e.g. `pvm`) and read from `source`."""
        path = ".".join(part for part in (prefix, self.path) if part)
        return ConfigError(path, self.problem, source if source is not None else self.source)


class AdapterError(InputError):
    """An adapter's files cannot be used: a newer format, corrupted or inconsistent weights."""


class AdapterMismatchError(AdapterError):
    """The adapter was trained on a different base model (architecture, shapes or weights)."""


class LegacyFingerprintWarning(UserWarning):
    """The adapter records the old, weaker base fingerprint (format 1: an embedding checksum only)."""
