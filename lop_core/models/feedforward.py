"""A plain (one run per module) MLP with optional batch/layer norm and dropout.

The "Barriers" experiments need what the population MLP leaves out: batch norm, dropout and
per-unit surgery (cloning). Layer k computes ``h_k = act(norm(W_k h_{k-1} + b_k))`` (norm before
the activation, the "Barriers" default), then dropout; a linear head reads the last layer.
"""

from __future__ import annotations

import torch
from torch import nn

from lop_core.models import layers


class MLP(nn.Module):
    """``in -> width x depth -> out``.

    Args:
        in_features, width, depth, out_features: the architecture.
        activation: hidden nonlinearity (``lop_core.models.layers.ACTIVATIONS``).
        norm: ``none``, ``batch`` or ``layer``, before every hidden activation.
        dropout: dropout probability after every hidden activation (0: none).

    Attributes:
        features: after a forward pass, the post-activation output of every hidden layer, each
            [B, width] (before dropout); the mechanism metrics read them.
    """

    def __init__(
        self,
        in_features: int = 784,
        width: int = 128,
        depth: int = 3,
        out_features: int = 10,
        activation: str = "relu",
        norm: str = "none",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.act_name, self.norm_kind = activation, norm
        self.act = layers.activation(activation)
        sizes = [in_features] + [width] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.norms = nn.ModuleList(layers.norm1d(norm, width) for _ in range(depth))
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(width, out_features)
        self.features: list[torch.Tensor] = []

    @property
    def width(self) -> int:
        return self.head.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, out] of inputs [B, in] (images are flattened)."""
        h = x.flatten(1)
        feats = []
        for linear, norm in zip(self.hidden, self.norms, strict=True):
            h = self.act(norm(linear(h)))
            feats.append(h)
            h = self.drop(h)
        self.features = feats
        return self.head(h)
