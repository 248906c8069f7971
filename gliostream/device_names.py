"""The device names users may give (`--device`, `device =`), checked without importing torch."""

from __future__ import annotations

import re

from .errors import ConfigError

DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


def check_device_name(name: object) -> str:
    """`name` when it names a device brats can use; ConfigError (one line) otherwise."""
    if not isinstance(name, str) or not DEVICE_NAME.fullmatch(name):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, not {name!r}")
    return name
