"""Configuration of one run of class-incremental image classification with a ViT (reference §4, §5.3).

The dataclass defaults are the paper's protocol: CIFAR-100, 5 new classes every 100 epochs, 20
tasks, the ViT of reference §4.1 with reparameterized layer norm, SGD with momentum and a fresh
one-cycle schedule per task. ``PRESET_VALUES`` shortens it: ``smoke`` (seconds, CI) and ``quick``
(CPU minutes) run a tiny ViT on the CIFAR-10 JPEG subset of the shared data (an ImageFolder tree
at ``<data root>/cifar10``); ``paper`` is CIFAR-100, one parameter away from both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from lop_core.errors import ConfigError

DATASETS = ("cifar100", "cifar10", "imagefolder")
#: Classes of the two torchvision data sets (an ImageFolder tree has as many as it has folders).
NUM_CLASSES = {"cifar100": 100, "cifar10": 10}
#: The plasticity methods implemented on the ViT (``lop_core.vision.methods``).
VIT_METHODS = ("base", "reset", "swr", "cbp", "redo", "shrink_perturb")


@dataclass
class IncrementalCIFARConfig:
    """One run of class-incremental classification (reference_code.md §4).

    Attributes:
        preset, seed, method, method_args: as for every benchmark (``lop_core.config``).
        dataset: ``cifar100``, ``cifar10`` (torchvision's files, downloaded when missing) or
            ``imagefolder`` (a ``train/<class>/*`` and ``test/<class>/*`` tree).
        data_dir: folder of the data set under the data root; "" means the data root itself for
            the torchvision data sets (which keep ``cifar-100-python/`` or ``cifar-10-batches-py/``
            there). An ImageFolder tree needs one, e.g. ``cifar10``.
        image_size: images are square, of this many pixels (ImageFolder images are resized).
        classes_per_task: classes added at every task (5 in the paper; the first task has as many).
        num_tasks: tasks of a run (20 in the paper: 5, 10, ..., 100 classes).
        epochs_per_task: epochs on every task (100 in the paper) before the next classes arrive.
        train_per_class, val_per_class: per class, the first ``val_per_class`` training images
            (in the data set's order) are the validation set and the next ``train_per_class`` the
            training set (450 / 50 in the reference); ``train_per_class = 0`` takes all the rest.
        test_per_class: test images per class (0: all of them).
        width, depth, heads, mlp, patch, dropout: the ViT (384, 8, 12, 1536, 4, 0.1 in the paper).
        layer_norm: ``regular`` (LN(x) g + b) or ``reparam`` (LN(x) (1 + w) + b, reference §4.2).
        step_size: peak learning rate of the one-cycle schedule (0.01).
        momentum: SGD momentum; with ``cycle_momentum`` the schedule overrides it (0.95 -> 0.85 ->
            0.95), as it does in the reference (§8 bug 11).
        cycle_momentum: let the one-cycle schedule cycle the momentum (the reference's behaviour).
        weight_decay: SGD's coupled L2 coefficient (6e-6 with reparam LN, 2e-6 with regular LN).
        rescaled_wd: False (the reference's base systems): the coefficient is divided by the
            current learning rate, so the per-step decay lr * wd = ``weight_decay`` is constant;
            True: a constant coefficient, so the decay follows the schedule (§4.4).
        wd_on_1d_params: False exempts biases and layer-norm parameters from weight decay.
        batch_size: training batch (90).
        probe_size: training images (un-augmented) on which the hidden units are measured at the
            end of every task.
    """

    benchmark: str = "incremental_cifar"
    preset: str = "paper"
    seed: int = 0
    method: str = "base"
    method_args: dict[str, Any] = field(default_factory=dict)
    dataset: str = "cifar100"
    data_dir: str = ""
    image_size: int = 32
    classes_per_task: int = 5
    num_tasks: int = 20
    epochs_per_task: int = 100
    train_per_class: int = 450
    val_per_class: int = 50
    test_per_class: int = 0
    width: int = 384
    depth: int = 8
    heads: int = 12
    mlp: int = 1536
    patch: int = 4
    dropout: float = 0.1
    layer_norm: str = "reparam"
    step_size: float = 0.01
    momentum: float = 0.9
    cycle_momentum: bool = True
    weight_decay: float = 6e-6
    rescaled_wd: bool = False
    wd_on_1d_params: bool = True
    batch_size: int = 90
    probe_size: int = 1000

    @property
    def num_classes(self) -> int:
        """Classes of the whole stream."""
        return self.classes_per_task * self.num_tasks

    @property
    def total_epochs(self) -> int:
        return self.num_tasks * self.epochs_per_task

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_TINY_VIT = {"width": 32, "depth": 2, "heads": 2, "mlp": 64, "patch": 8}
_CIFAR10_TREE = {"dataset": "imagefolder", "data_dir": "cifar10", "classes_per_task": 2}

#: Values each preset changes from the paper's protocol.
PRESET_VALUES: dict[str, dict[str, Any]] = {
    "smoke": {
        **_CIFAR10_TREE,
        **_TINY_VIT,
        "num_tasks": 2,
        "epochs_per_task": 2,
        "train_per_class": 30,
        "val_per_class": 10,
        "test_per_class": 20,
        "batch_size": 15,
        "probe_size": 40,
    },
    "quick": {
        **_CIFAR10_TREE,
        **_TINY_VIT,
        "width": 48,
        "mlp": 96,
        "num_tasks": 5,
        "epochs_per_task": 4,
        "test_per_class": 200,
        "probe_size": 200,
    },
    "paper": {},
}

#: The reference's tuned values for the ViT (reference §5.3), over the methods' permuted-MNIST
#: defaults. The reference never resets optimizer state (``state_reset="none"``), and its tuned
#: values belong to that; CBP's utility is the instantaneous one of its code (§3.1).
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "swr": {
        "utility": "gradient",
        "pruning": "threshold",
        "reinit": "resample",
        "reinit_freq": 128,
        "reinit_factor": 5e-4,
        "decay_rate": 0.0,
        "state_reset": "none",
    },
    "cbp": {
        "replacement_rate": 1e-7,
        "maturity_threshold": 10000,
        "utility": "contribution",
        "utility_average": "instantaneous",
        "state_reset": "none",
    },
    "redo": {
        "reinit_frequency": 128,
        "dormant_threshold": 5e-4,
        "utility": "activation",
        "state_reset": "none",
    },
    "shrink_perturb": {"noise_variance": 1e-8},
    "reset": {"state_reset": "all"},
}


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: IncrementalCIFARConfig) -> None:
    """Check ranges and choices of a resolved config (see ``lop_core.config.resolve``)."""
    from lop_core.methods import METHODS
    from lop_core.models.vit import LAYER_NORMS

    _check(cfg.dataset in DATASETS, f"dataset {cfg.dataset!r}; choose one of {list(DATASETS)}")
    _check(
        cfg.dataset != "imagefolder" or bool(cfg.data_dir),
        "dataset imagefolder needs data_dir, the tree's folder under the data root (e.g. cifar10)",
    )
    _check(cfg.layer_norm in LAYER_NORMS, f"layer_norm {cfg.layer_norm!r}; choose one of {list(LAYER_NORMS)}")
    _check(
        cfg.method in VIT_METHODS,
        f"method {cfg.method!r} is not implemented for the ViT; choose one of {list(VIT_METHODS)}",
    )
    _check(cfg.seed >= 0, f"seed must be >= 0, got {cfg.seed}")
    for name in ("classes_per_task", "num_tasks", "epochs_per_task", "val_per_class", "batch_size"):
        _check(getattr(cfg, name) >= 1, f"{name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("train_per_class", "test_per_class"):
        _check(getattr(cfg, name) >= 0, f"{name} must be >= 0 (0: all), got {getattr(cfg, name)}")
    known = NUM_CLASSES.get(cfg.dataset)
    _check(
        known is None or cfg.num_classes <= known,
        f"classes_per_task x num_tasks = {cfg.num_classes} exceeds the {known} classes of {cfg.dataset}",
    )
    _check(cfg.image_size >= 1 and cfg.patch >= 1, "image_size and patch must be >= 1")
    _check(
        cfg.image_size % cfg.patch == 0, f"image_size {cfg.image_size} is not a multiple of patch {cfg.patch}"
    )
    _check(min(cfg.width, cfg.depth, cfg.heads, cfg.mlp) >= 1, "width, depth, heads and mlp must be >= 1")
    _check(cfg.width % cfg.heads == 0, f"width {cfg.width} is not a multiple of heads {cfg.heads}")
    _check(0 <= cfg.dropout < 1, f"dropout must be in [0, 1), got {cfg.dropout}")
    _check(cfg.step_size > 0, f"step_size must be > 0, got {cfg.step_size}")
    _check(0 <= cfg.momentum < 1, f"momentum must be in [0, 1), got {cfg.momentum}")
    _check(cfg.weight_decay >= 0, f"weight_decay must be >= 0, got {cfg.weight_decay}")
    _check(cfg.probe_size >= 2, f"probe_size must be >= 2, got {cfg.probe_size}")
    if cfg.method == "shrink_perturb":  # its shrink is the weight decay here, not l2_factor
        var = cfg.method_args["noise_variance"]
        _check(var >= 0, f"shrink_perturb: noise_variance must be >= 0, got {var}")
        _check(cfg.weight_decay > 0, "shrink_perturb shrinks with the weight decay: set weight_decay > 0")
    else:
        METHODS[cfg.method].validate(cfg)
