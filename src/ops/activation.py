"""The activations the CPU kernels apply in place of a separate op after them, in one table
shared by the cells that fuse one (BatchNorm2d, ActivatedConv2d and its subclasses)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from mindspore import nn, ops


class Activation(NamedTuple):
    clamp: tuple[float, float]  # what the kernels clamp to
    op: object                  # the functional op, for graphs off the kernels
    cell: type                  # the cell, for what is left behind when a BatchNorm is folded away
    kernel_suffix: str          # in the kernels' function names


ACTIVATIONS = {None: Activation((-np.inf, np.inf), ops.identity, nn.Identity, ""),
               "relu": Activation((0.0, np.inf), ops.relu, nn.ReLU, "Relu"),
               "relu6": Activation((0.0, 6.0), ops.relu6, nn.ReLU6, "Relu6")}


def lookup(name: str | None, owner: str) -> Activation:
    """The table entry for `name`; an unknown name is an error that lists the known ones."""
    if name not in ACTIVATIONS:
        raise ValueError(f"{owner} activation must be one of {list(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]
