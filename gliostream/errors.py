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


class OptionConflict(ConfigError):
    """Options that do not go together, or a required one missing: a bad command line (exit 2)."""


class OutputError(BratsError):
    """An output file cannot be written (full disk, permissions); nothing half-written is kept."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{printable(self.path)}: cannot be written ({reason}); nothing half-written was kept")


class BusyError(BratsError):
    """Another run is writing the same output folder."""


class TrainingDiverged(BratsError):
    """Training produced a non-finite loss or weights; the last good checkpoints are kept."""


class CheckpointError(BratsError):
    """A checkpoint is missing, unreadable, unsafe, or does not fit the requested run."""


def printable(text: str) -> str:
    """`text` with every control character (a newline in a folder name, an escape sequence) written
    as its escape, so that one message is always one line and cannot forge another."""
    if all(ch.isprintable() for ch in text):
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def shortened(message: str, limit: int = 160) -> str:
    """The first line of a message, cut at a word boundary (with "...") when longer than `limit`."""
    line = message.strip().splitlines()[0] if message.strip() else ""
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
