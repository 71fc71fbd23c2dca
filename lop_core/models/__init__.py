"""Models: the population MLP (the ViT arrives with the CIFAR experiment)."""

from lop_core.models.mlp import PopulationMLP, init_std

__all__ = ["PopulationMLP", "init_std"]
