"""A small convolutional network for 32x32 images (the CPU-sized model of the vision experiments).

``len(channels)`` blocks ``conv3x3 -> norm -> act -> maxpool2``, then a hidden linear layer
``-> norm -> act -> dropout`` and a linear head. With the default channels (16, 32, 64) and 128
hidden units it has about 0.16 M parameters: a CIFAR-10 epoch of 20,000 images takes seconds
on a CPU core. Norms are those of ``lop_core.models.layers`` (conv "layer norm" = GroupNorm(1, C)).
"""

from __future__ import annotations

import torch
from torch import nn

from lop_core.models import layers


class SmallCNN(nn.Module):
    """A VGG-style CNN with optional batch/layer norm and dropout.

    Args:
        num_classes: head outputs.
        in_channels: image channels (3 for CIFAR).
        image_size: square input size; each block halves it.
        channels: output channels of the conv blocks.
        hidden: units of the hidden linear layer.
        activation: nonlinearity (``layers.ACTIVATIONS``).
        norm: ``none``, ``batch`` or ``layer``, before every activation.
        dropout: dropout probability before the head.

    Attributes:
        features: after a forward pass, the post-activation output of every block ([B, C, H, W])
            and of the hidden linear layer ([B, hidden]).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        channels: tuple[int, ...] = (16, 32, 64),
        hidden: int = 128,
        activation: str = "relu",
        norm: str = "none",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.act = layers.activation(activation)
        sizes = [in_channels, *channels]
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, 3, padding=1) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.conv_norms = nn.ModuleList(layers.norm2d(norm, c) for c in channels)
        side = image_size // 2 ** len(channels)
        if side < 1:
            raise ValueError(f"{len(channels)} blocks halve a {image_size}-pixel image below one pixel")
        self.fc = nn.Linear(channels[-1] * side * side, hidden)
        self.fc_norm = layers.norm1d(norm, hidden)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_classes)
        self.features: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, classes] of images [B, C, H, W]."""
        feats = []
        for conv, norm in zip(self.convs, self.conv_norms, strict=True):
            x = self.act(norm(conv(x)))
            feats.append(x)
            x = nn.functional.max_pool2d(x, 2)
        x = self.act(self.fc_norm(self.fc(x.flatten(1))))  # [B, C * side * side] -> [B, hidden]
        feats.append(x)
        self.features = feats
        return self.head(self.drop(x))
