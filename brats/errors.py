"""Exception types, each naming what went wrong in words a user can act on, and how messages are cut."""

from __future__ import annotations

from pathlib import Path


class BratsError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidCaseError(BratsError):
    """A raw case (or one of its files) cannot be ingested; names the file and the problem."""

    def __init__(self, file: str | Path, problem: str) -> None:
        self.file = str(file)
        self.problem = problem
        super().__init__(f"{self.file}: {problem}")


class DiscoveryError(BratsError):
    """The raw folder is missing or holds no BraTS case."""


class StoreError(BratsError):
    """The store cannot be created, opened or written."""


class StoreMismatchError(StoreError):
    """The store was written with another schema version or other preprocessing parameters."""


class ConfigError(BratsError):
    """An option or config file value cannot be used."""


class CheckpointError(BratsError):
    """A checkpoint is missing, unreadable, unsafe, or does not fit the requested run."""


def shortened(message: str, limit: int = 160) -> str:
    """The first line of a message, cut at a word boundary (with "...") when longer than `limit`."""
    line = message.strip().splitlines()[0] if message.strip() else ""
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
