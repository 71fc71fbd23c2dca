"""Batched image augmentation on the training device (the reference's training transforms, §4.3).

The reference applies, per training image and in this order: normalization, a horizontal flip
with probability 1/2, a 32 x 32 random crop of the image padded by 4 pixels with reflection, and a
rotation by an angle uniform in [0, 15] degrees (one-sided; nearest neighbour, fill 0 in the
normalized space). Here each step is one tensor operation on the whole batch, every image with
its own random draw from the run's generator. Validation and test images are only normalized.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PAD = 4
MAX_DEGREES = 15.0


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images [B, 3, H, W] -> float32 ``(x / 255 - mean) / std`` (mean, std: [3])."""
    x = images.float().div_(255.0)
    return x.sub_(mean.view(1, 3, 1, 1)).div_(std.view(1, 3, 1, 1))


def flip(x: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """Mirror the images ``which`` (bool [B]) left-right."""
    return torch.where(which.view(-1, 1, 1, 1), x.flip(-1), x)


def reflect_crop(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, pad: int = PAD) -> torch.Tensor:
    """Pad by ``pad`` pixels with reflection, then cut each image's own H x W window at (top, left) [B]."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")  # [B, C, H + 2 pad, W + 2 pad]
    rows = (top.view(-1, 1) + torch.arange(h, device=x.device)).view(b, 1, h, 1).expand(b, c, h, w + 2 * pad)
    out = padded.gather(2, rows)  # [B, C, H, W + 2 pad]: each image's rows
    cols = (left.view(-1, 1) + torch.arange(w, device=x.device)).view(b, 1, 1, w).expand(b, c, h, w)
    return out.gather(3, cols)  # [B, C, H, W]


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image counter-clockwise by its angle (degrees [B]) about its centre.

    Nearest-neighbour sampling, 0 outside the image: torchvision's ``rotate`` on tensors.
    """
    theta = degrees.to(x.dtype) * (math.pi / 180.0)
    cos, sin = theta.cos(), theta.sin()
    zero = torch.zeros_like(cos)
    # the grid maps output pixels to input pixels (normalized coordinates, y pointing down):
    # a counter-clockwise turn of the picture samples the input at the clockwise-turned point
    affine = torch.stack(
        [torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1
    )  # [B, 2, 3]
    grid = F.affine_grid(affine, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The reference's training augmentation of normalized images [B, 3, H, W] (flip, crop, rotation)."""
    b = x.shape[0]
    draws = torch.rand(b, 4, generator=generator, device=x.device)  # one row of draws per image
    x = flip(x, draws[:, 0] < 0.5)
    top = (draws[:, 1] * (2 * PAD + 1)).long().clamp_(max=2 * PAD)  # uniform on {0, ..., 2 pad}
    left = (draws[:, 2] * (2 * PAD + 1)).long().clamp_(max=2 * PAD)
    x = reflect_crop(x, top, left)
    return rotate(x, draws[:, 3] * MAX_DEGREES)
