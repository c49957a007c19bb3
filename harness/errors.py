"""Error types. A UsageError is bad input from the user: one clear line, exit status 2."""

from __future__ import annotations

from typing import Iterable


class AttnbenchError(Exception):
    """Base of attnbench's own errors."""


class UsageError(AttnbenchError, ValueError):
    """Bad input (unknown name, bad size, unreadable file): reported in one line, exit 2."""


class UnknownNameError(UsageError, KeyError):
    """An unknown implementation, preset, task, ... ; the message lists the valid ones."""

    def __init__(self, kind: str, name: str, valid: Iterable[str], hint: str = "") -> None:
        self.kind, self.name, self.valid = kind, name, list(valid)
        super().__init__(f"unknown {kind} {name!r}; valid: {', '.join(self.valid)}"
                         + (f" ({hint})" if hint else ""))

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]


class UnsupportedError(AttnbenchError, ValueError):
    """An implementation asked for something it cannot do (causal, dtype, device, ...)."""


def first_line(text: str, limit: int = 200) -> str:
    """The first line of a message (an exception's, a tool's output), at most ``limit`` long."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:limit]
