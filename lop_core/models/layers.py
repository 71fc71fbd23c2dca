"""Building blocks of the per-run networks (MLP, small CNN, ResNet-18): activations and norms.

The "Barriers" experiments vary the normalization of every hidden layer: none, batch norm or layer
norm, applied *before* the activation (their default). For convolutional layers "layer norm" is
``GroupNorm(1, C)``: one group normalizing over channels and positions, as in that paper's code.
"""

from __future__ import annotations

from torch import nn

from lop_core.models.mlp import _ACTIVATIONS

NORMS = ("none", "batch", "layer")
ACTIVATIONS = tuple(_ACTIVATIONS)


def activation(name: str):
    """The activation function ``name`` (the same table as the population MLP)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def _check_norm(kind: str) -> None:
    if kind not in NORMS:
        raise ValueError(f"unknown norm {kind!r}; choose one of {list(NORMS)}")


def norm1d(kind: str, units: int) -> nn.Module:
    """Normalization of a [B, units] layer: identity, ``BatchNorm1d`` or ``LayerNorm``."""
    _check_norm(kind)
    if kind == "batch":
        return nn.BatchNorm1d(units)
    if kind == "layer":
        return nn.LayerNorm(units)
    return nn.Identity()


def norm2d(kind: str, channels: int) -> nn.Module:
    """Normalization of a [B, C, H, W] layer: identity, ``BatchNorm2d`` or ``GroupNorm(1, C)``."""
    _check_norm(kind)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    return nn.Identity()
