"""Models: the population MLP (``mlp``), the ViT of the class-incremental experiment (``vit``), and
the per-run networks of the mechanism and warm-start experiments (``feedforward``, ``cnn``, ``resnet``)."""

from lop_core.models.mlp import PopulationMLP, init_std

__all__ = ["PopulationMLP", "init_std"]
