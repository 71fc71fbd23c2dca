"""Configuration of the mechanism (B) and warm-starting (C) benchmarks: dataclasses, presets, checks.

Light on purpose (no torch): ``lop_core.config`` imports it to register the benchmarks.

* ``continual_mnist`` (findings B1, B3-B5): an MLP learns a stream of tasks on a fixed set of MNIST
  images, each task a new pixel permutation or a new random labelling, several epochs per task,
  with Adam as in the "Barriers" paper. The paper's own continual runs are on Tiny-ImageNet
  (not available here); the dataclass defaults are a GPU-sized MNIST version of that protocol.
* ``warm_start`` (findings C1, C2): train on part of the training set, then on all of it, from
  the first phase's weights (``warm``), after shrink-and-perturb (``shrink_perturb``) or from a
  fresh initialization (``fresh``), on the CIFAR-10 images of the shared data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from lop_core.errors import ConfigError

TASKS = ("permuted", "shuffled_labels")
NORMS = ("none", "batch", "layer")
ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "gelu", "silu")
OPTIMIZERS = ("adam", "sgd")
STARTS = ("warm", "shrink_perturb", "fresh")
MODELS = ("cnn", "resnet18", "mlp")


@dataclass
class ContinualMNISTConfig:
    """One run of a task stream on a fixed subset of MNIST (the mechanism experiments).

    Attributes:
        preset, seed, method, method_args: as for every benchmark; only ``method="base"`` (plain
            training): the remedies studied here are architectural (norm, dropout, noise).
        task: ``permuted`` (a new pixel permutation per task) or ``shuffled_labels`` (a new random
            label for every image per task: pure memorization, which needs every unit).
        examples_per_task: MNIST training images of every task (the same images in every task).
        num_tasks: tasks of a run.
        epochs_per_task: passes over the task's images.
        width, depth: hidden units per layer and hidden layers.
        activation: hidden nonlinearity.
        norm: ``none``, ``batch`` or ``layer``, before every activation.
        layer_norm: ``norm == "layer"``, derived (a label the run store reads for every benchmark).
        dropout: dropout probability after every hidden layer.
        noise: noise injection, ``g <- g + noise * ||g|| * eps`` (``mechanisms.perturb_gradients``).
        optimizer: ``adam`` (the paper's) or ``sgd``.
        step_size: learning rate.
        batch_size: examples per step.
        probe_size: images of the task on which the units are measured at the end of every task.
    """

    benchmark: str = "continual_mnist"
    preset: str = "paper"
    seed: int = 0
    method: str = "base"
    method_args: dict[str, Any] = field(default_factory=dict)
    task: str = "permuted"
    examples_per_task: int = 10000
    num_tasks: int = 100
    epochs_per_task: int = 20
    width: int = 128
    depth: int = 5
    activation: str = "relu"
    norm: str = "none"
    layer_norm: bool = False
    dropout: float = 0.0
    noise: float = 0.0
    optimizer: str = "adam"
    step_size: float = 1e-3
    batch_size: int = 128
    probe_size: int = 1000

    def __post_init__(self):
        self.layer_norm = self.norm == "layer"

    @property
    def run_prefix(self) -> str:
        """``relu-batch-d0.1-n0-w64``: activation, norm, dropout, noise, width (``config.run_name``)."""
        return f"{self.activation}-{self.norm}-d{self.dropout:g}-n{self.noise:g}-w{self.width}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Values each preset changes from the dataclass defaults. ``quick`` compresses the loss of
#: plasticity into 30 short tasks with a 10x larger Adam step size (about 10 s per run on a CPU core).
CONTINUAL_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "examples_per_task": 256,
        "num_tasks": 3,
        "epochs_per_task": 2,
        "width": 16,
        "depth": 2,
        "step_size": 0.01,
        "probe_size": 128,
    },
    "quick": {
        "examples_per_task": 2000,
        "num_tasks": 30,
        "epochs_per_task": 5,
        "width": 64,
        "depth": 3,
        "step_size": 0.01,
        "probe_size": 500,
    },
    "paper": {},
}


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _choice(name: str, value: str, choices: tuple) -> None:
    _check(value in choices, f"{name} {value!r}; choose one of {list(choices)}")


def validate_continual(cfg: ContinualMNISTConfig) -> None:
    """Ranges and choices of a ``continual_mnist`` config."""
    _check(cfg.method == "base", f"continual_mnist trains plain networks (method base), got {cfg.method!r}")
    _choice("task", cfg.task, TASKS)
    _choice("norm", cfg.norm, NORMS)
    _choice("activation", cfg.activation, ACTIVATIONS)
    _choice("optimizer", cfg.optimizer, OPTIMIZERS)
    _check(
        1 <= cfg.examples_per_task <= 60000,
        f"examples_per_task must be in [1, 60000], got {cfg.examples_per_task}",
    )
    _check(cfg.num_tasks >= 1 and cfg.epochs_per_task >= 1, "num_tasks and epochs_per_task must be >= 1")
    _check(
        cfg.width >= 1 and 1 <= cfg.depth <= 32,
        f"width >= 1 and depth in [1, 32], got {cfg.width}, {cfg.depth}",
    )
    _check(0 <= cfg.dropout < 1, f"dropout must be in [0, 1), got {cfg.dropout}")
    _check(cfg.noise >= 0, f"noise must be >= 0, got {cfg.noise}")
    _check(cfg.step_size > 0 and cfg.seed >= 0, "step_size must be > 0 and seed >= 0")
    _check(
        1 <= cfg.batch_size <= cfg.examples_per_task,
        f"batch_size must be in [1, examples_per_task], got {cfg.batch_size}",
    )
    _check(
        2 <= cfg.probe_size <= cfg.examples_per_task,
        f"probe_size must be in [2, examples_per_task], got {cfg.probe_size}",
    )


@dataclass
class WarmStartConfig:
    """One run of the warm-starting experiment (Ash & Adams 2020; Berariu et al. 2021).

    Phase 0 trains on the first ``first_fraction`` of the training images, phase 1 on all of them,
    each until the training accuracy (over an epoch) reaches ``fit_accuracy`` or for
    ``max_epochs``. Phase 1 starts from phase 0's weights (``warm``), from them shrunk and perturbed
    (``shrink_perturb``: ``theta <- shrink * theta + perturb * theta_fresh``, ``theta_fresh`` a
    fresh initialization, as in Ash & Adams' code), or from a fresh initialization (``fresh``,
    which skips phase 0). Every phase starts with a fresh optimizer.

    Attributes:
        preset, seed, method, method_args: as for every benchmark (only ``method="base"``).
        start: ``warm``, ``shrink_perturb`` or ``fresh``.
        shrink, perturb: lambda and sigma of shrink-and-perturb (0.4 and 0.1 as starting values).
        dataset, data_dir: the data (``lop_core.vision.data.load_dataset``); by default the
            CIFAR-10 JPEG subset of the shared data, an ImageFolder tree at ``<data root>/cifar10``.
        examples_per_task: training images of phase 1 (all of them), the first
            ``examples_per_task / classes`` of every class in data-set order.
        first_fraction: share of those images (per class) in phase 0.
        test_per_class: test images per class (0: all).
        model: ``resnet18`` (``lop_core.models.resnet``), ``cnn`` (``lop_core.models.cnn.SmallCNN``)
            or ``mlp`` (two hidden layers on the flattened pixels).
        width: ResNet-18: channels of the first stage (64 in the paper); CNN: channels of the first
            conv layer (doubled per block, ``8 * width`` hidden units); MLP: hidden units per layer.
        norm, layer_norm, dropout: as in ``ContinualMNISTConfig``.
        augment: random flips, crops and rotations of the training images (``vision.augment``).
        optimizer, step_size, batch_size: the optimizer of both phases.
        fit_accuracy, max_epochs: a phase ends when its training accuracy over an epoch reaches
            ``fit_accuracy``, or after ``max_epochs``.
    """

    benchmark: str = "warm_start"
    preset: str = "paper"
    seed: int = 0
    method: str = "base"
    method_args: dict[str, Any] = field(default_factory=dict)
    start: str = "warm"
    shrink: float = 0.4
    perturb: float = 0.1
    dataset: str = "imagefolder"
    data_dir: str = "cifar10"
    examples_per_task: int = 20000
    first_fraction: float = 0.5
    test_per_class: int = 0
    model: str = "resnet18"
    width: int = 64
    norm: str = "batch"
    layer_norm: bool = False
    dropout: float = 0.0
    augment: bool = False
    optimizer: str = "adam"
    step_size: float = 0.001
    batch_size: int = 128
    fit_accuracy: float = 0.99
    max_epochs: int = 200

    def __post_init__(self):
        self.layer_norm = self.norm == "layer"

    @property
    def run_prefix(self) -> str:
        """``warm-cnn-w8``, ``shrink_perturb0.4x0.1-cnn-w8``, ``fresh-resnet18-w64`` (``config.run_name``)."""
        start = (
            f"{self.start}{self.shrink:g}x{self.perturb:g}" if self.start == "shrink_perturb" else self.start
        )
        return f"{start}-{self.model}-w{self.width}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: ``smoke`` runs the small CNN for seconds; ``quick`` an MLP (3072 -> 128 -> 128 -> 10) on 2,000
#: images, tens of seconds per run on a CPU core; ``paper`` a ResNet-18 on all 20,000 (GPU).
WARM_START_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "model": "cnn",
        "width": 4,
        "norm": "none",
        "examples_per_task": 100,
        "test_per_class": 10,
        "batch_size": 25,
        "max_epochs": 2,
    },
    "quick": {
        "model": "mlp",
        "width": 128,
        "norm": "none",
        "examples_per_task": 2000,
        "test_per_class": 100,
        "batch_size": 64,
        "max_epochs": 40,
    },
    "paper": {},
}


def validate_warm_start(cfg: WarmStartConfig) -> None:
    """Ranges and choices of a ``warm_start`` config."""
    _check(cfg.method == "base", f"warm_start trains plain networks (method base), got {cfg.method!r}")
    _choice("start", cfg.start, STARTS)
    _choice("model", cfg.model, MODELS)
    _choice("norm", cfg.norm, NORMS)
    _choice("optimizer", cfg.optimizer, OPTIMIZERS)
    _choice("dataset", cfg.dataset, ("imagefolder", "cifar10"))
    _check(0 <= cfg.shrink <= 1 and cfg.perturb >= 0, "shrink must be in [0, 1] and perturb >= 0")
    _check(0 < cfg.first_fraction < 1, f"first_fraction must be in (0, 1), got {cfg.first_fraction}")
    _check(cfg.examples_per_task >= 20, f"examples_per_task must be >= 20, got {cfg.examples_per_task}")
    _check(cfg.test_per_class >= 0 and cfg.width >= 1, "test_per_class must be >= 0 and width >= 1")
    _check(0 <= cfg.dropout < 1, f"dropout must be in [0, 1), got {cfg.dropout}")
    _check(cfg.step_size > 0 and cfg.seed >= 0, "step_size must be > 0 and seed >= 0")
    _check(0 < cfg.fit_accuracy <= 1 and cfg.max_epochs >= 1, "fit_accuracy in (0, 1], max_epochs >= 1")
    _check(cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}")


#: The validation of each benchmark of this module (``lop_core.config.validate`` dispatches here).
VALIDATORS = {"continual_mnist": validate_continual, "warm_start": validate_warm_start}
