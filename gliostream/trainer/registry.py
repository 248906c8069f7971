"""Networks and losses by name: the built-in ones, and those a user brings.

A config names its network (`ModelConfig.network`) and loss (`LossConfig.kind`); training,
validation, scoring and prediction build them through here, so a network or loss registered
before the config is made is used everywhere the built-in ones are, and its name is saved in
every checkpoint (a process that loads such a checkpoint registers it first).

A network factory takes the `ModelConfig` and returns a module that maps (B, 4, x, y, z) images
to (B, 3, x, y, z) region logits (WT, TC, ET) in eval mode, and in training mode either those
logits or a list [full, 1/2, 1/4, ...] (deep supervision: one output per
`ModelConfig.deep_supervision` head after the full one). A loss takes (logits, soft region
targets, `LossConfig`) at one resolution and returns a scalar; deep supervision weighs it per head.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import ConfigError
from .config import LOSSES, NETWORKS, LossConfig, ModelConfig
from .loss import LOSS_FUNCTIONS
from .model import ResUNet

NetworkFactory = Callable[[ModelConfig], nn.Module]
LossFunction = Callable[[torch.Tensor, torch.Tensor, LossConfig], torch.Tensor]

_networks: dict[str, NetworkFactory] = {"resunet": ResUNet}


def _check_name(name: str, kind: str, taken: dict) -> None:
    if not isinstance(name, str) or not name or name in taken:
        raise ConfigError(f"{kind} name {name!r} is empty or taken ({', '.join(taken)})")


def register_network(name: str, factory: NetworkFactory) -> None:
    """Make `ModelConfig(network=name)` build `factory(config)`."""
    _check_name(name, "network", _networks)
    _networks[name] = factory
    NETWORKS.append(name)


def register_loss(name: str, function: LossFunction, label: str | None = None) -> None:
    """Make `LossConfig(kind=name)` train with `function`; `label` names it in the training curves."""
    _check_name(name, "loss", LOSS_FUNCTIONS)
    LOSS_FUNCTIONS[name] = (function, label or name)
    LOSSES.append(name)


def build_network(config: ModelConfig) -> nn.Module:
    """The (untrained) network a model config names."""
    return _networks[config.network](config)


def loss_label(name: str) -> str:
    """How the training curves name the loss."""
    return LOSS_FUNCTIONS[name][1]
