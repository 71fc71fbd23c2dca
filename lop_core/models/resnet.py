"""ResNet-18 adapted to 32x32 images (the warm-starting paper's network; He et al. 2016).

The CIFAR variant: a 3x3 stride-1 stem without max-pooling, four stages of two basic blocks with
``width x (1, 2, 4, 8)`` channels (strides 1, 2, 2, 2), global average pooling, optional dropout
and a linear head: 11.2 M parameters at ``width=64`` with 10 classes. Norm is ``none``, ``batch``
or ``layer`` (GroupNorm(1, C)), as in ``lop_core.models.layers``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lop_core.models import layers


class BasicBlock(nn.Module):
    """``relu(norm(conv(relu(norm(conv(x))))) + shortcut(x))``; the shortcut is a 1x1 conv when the
    shape changes."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = layers.norm2d(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = layers.norm2d(norm, cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), layers.norm2d(norm, cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs.

    Args:
        num_classes: head outputs.
        width: channels of the first stage (64 in the paper).
        norm: ``none``, ``batch`` or ``layer``.
        dropout: dropout probability before the head.
        in_channels: image channels.

    Attributes:
        features: after a forward pass, the output of every stage ([B, C, H, W]) and the pooled
            penultimate features ([B, 8 * width]).
    """

    def __init__(
        self,
        num_classes: int = 10,
        width: int = 64,
        norm: str = "batch",
        dropout: float = 0.0,
        in_channels: int = 3,
    ):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.stem_norm = layers.norm2d(norm, width)
        stages, cin = [], width
        for k, stride in enumerate((1, 2, 2, 2)):
            cout = width * 2**k
            stages.append(nn.Sequential(BasicBlock(cin, cout, stride, norm), BasicBlock(cout, cout, 1, norm)))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(cin, num_classes)
        self.features: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, classes] of images [B, C, 32, 32]."""
        x = F.relu(self.stem_norm(self.stem(x)))
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        pooled = x.mean(dim=(2, 3))  # [B, C, H, W] -> [B, C]
        feats.append(pooled)
        self.features = feats
        return self.head(self.drop(pooled))
