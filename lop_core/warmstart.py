"""Warm starting (findings C1, C2): train on part of the data, then on all of it.

Ash & Adams (2020) found that a network trained first on half of a training set and then on all
of it generalizes worse than a freshly initialized network trained on all of it, though both fit
the training data; shrinking the weights and adding noise at the switch (``shrink_perturb``)
closes much of the gap. The trainer ``WarmStart`` runs both phases of every run (see
``lop_core.mechanism_config.WarmStartConfig``) and records, per epoch, the training accuracy over
the epoch and the test accuracy after it; at the end of every phase the accuracy on the phase's
whole training set (eval mode) and on the test set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lop_core.data import seeded_generator
from lop_core.models.cnn import SmallCNN
from lop_core.models.feedforward import MLP
from lop_core.models.resnet import ResNet18
from lop_core.train import resolve_device
from lop_core.vision import augment as aug
from lop_core.vision.data import first_per_class, load_dataset


def build_model(cfg, num_classes: int, seed: int) -> torch.nn.Module:
    """The run's network, initialized from ``seed`` (torch's default initialization)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if cfg.model == "resnet18":
            return ResNet18(num_classes, cfg.width, cfg.norm, cfg.dropout)
        if cfg.model == "mlp":  # on the flattened 3 x 32 x 32 pixels
            return MLP(3 * 32 * 32, cfg.width, 2, num_classes, "relu", cfg.norm, cfg.dropout)
        w = cfg.width
        return SmallCNN(num_classes, 3, 32, (w, 2 * w, 4 * w), 8 * w, "relu", cfg.norm, cfg.dropout)


@torch.no_grad()
def shrink_perturb_(model: torch.nn.Module, fresh: torch.nn.Module, shrink: float, perturb: float) -> None:
    """``theta <- shrink * theta + perturb * theta_fresh`` for every parameter (Ash & Adams 2020).

    ``fresh`` is a freshly initialized network of the same architecture: the noise has the
    initialization's distribution, per layer. Buffers (batch-norm statistics) are kept.
    """
    for p, q in zip(model.parameters(), fresh.parameters(), strict=True):
        p.mul_(shrink).add_(q, alpha=perturb)


class _Run:
    """One run: its data split, model and generators."""

    def __init__(self, cfg, data, device):
        self.cfg, self.device = cfg, device
        classes = len(data.classes)
        per_class = cfg.examples_per_task // classes
        full = first_per_class(data.train_y, 0, per_class)  # phase 1: all of it
        first = first_per_class(data.train_y, 0, max(1, int(per_class * cfg.first_fraction)))
        test = first_per_class(data.test_y, 0, cfg.test_per_class)
        self.splits = {0: first, 1: full}
        self.data, self.test = data, test
        self.mean = torch.tensor(data.mean, device=device)
        self.std = torch.tensor(data.std, device=device)
        self.model = build_model(cfg, classes, cfg.seed).to(device)
        self.batches = seeded_generator(cfg.seed, stream=2)  # example order (CPU)
        self.aug = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + 3)  # augmentation draws
        self.rows: list[tuple] = []
        self.epoch = 0  # epochs trained so far (both phases)
        self.ends: dict[int, dict] = {}  # per phase: accuracies at its end and epochs it took

    def images(self, idx: torch.Tensor, split: str, train: bool) -> torch.Tensor:
        x = self.data.train_x if split == "train" else self.data.test_x
        x = aug.normalize(x[idx], self.mean, self.std)
        return aug.augment(x, self.aug) if train and self.cfg.augment else x

    @torch.no_grad()
    def accuracy(self, idx: torch.Tensor, split: str) -> float:
        self.model.eval()
        labels = (self.data.train_y if split == "train" else self.data.test_y)[idx]
        correct = sum(
            (self.model(self.images(chunk, split, False)).argmax(1) == labels[k : k + 1000]).sum().item()
            for k, chunk in zip(range(0, len(idx), 1000), idx.split(1000), strict=True)
        )
        self.model.train()
        return correct / len(idx)

    def switch(self, phase: int) -> None:
        """Prepare phase ``phase``: at phase 1, shrink-and-perturb or a fresh network."""
        c = self.cfg
        if phase == 1 and c.start == "shrink_perturb":
            fresh = build_model(c, len(self.data.classes), c.seed + 1_000_003).to(self.device)
            shrink_perturb_(self.model, fresh, c.shrink, c.perturb)
        # a fresh run's network is already at its initialization: it skips phase 0

    def train_phase(self, phase: int) -> float:
        """Train phase ``phase`` until it fits (see the config); returns the last epoch's accuracy."""
        c = self.cfg
        if phase == 0 and c.start == "fresh":
            return float("nan")
        self.switch(phase)
        params = self.model.parameters()
        opt = (
            torch.optim.Adam(params, c.step_size)
            if c.optimizer == "adam"
            else torch.optim.SGD(params, c.step_size)
        )
        idx_all = self.splits[phase]
        labels = self.data.train_y
        torch.manual_seed(c.seed * 1_000_003 + phase)  # dropout masks: per run and phase
        fit, epochs = float("nan"), 0
        while epochs < c.max_epochs:
            order = idx_all[torch.randperm(len(idx_all), generator=self.batches).to(idx_all.device)]
            correct = 0
            for batch in order.split(c.batch_size):
                y = labels[batch]
                logits = self.model(self.images(batch, "train", True))
                loss = F.cross_entropy(logits, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                correct += (logits.detach().argmax(1) == y).sum().item()
            fit, epochs = correct / len(idx_all), epochs + 1
            self.record("train_accuracy", fit, phase)
            self.record("test_accuracy", self.accuracy(self.test, "test"), phase)
            self.epoch += 1
            if fit >= c.fit_accuracy:
                break
        self.ends[phase] = {
            "epochs": epochs,
            "train_accuracy": self.accuracy(idx_all, "train"),
            "test_accuracy": self.accuracy(self.test, "test"),
        }
        return fit

    def record(self, metric: str, value: float, phase: int) -> None:
        self.rows.append((self.epoch, metric, "all", float(value)))
        if metric == "train_accuracy":
            self.rows.append((self.epoch, "phase", "all", float(phase)))

    def summary(self) -> dict:
        c, end = self.cfg, self.ends[1]
        first = self.ends.get(0, {})
        return {
            "start": c.start,
            "shrink": c.shrink,
            "perturb": c.perturb,
            "model": c.model,
            "final_train_accuracy": end["train_accuracy"],
            "final_test_accuracy": end["test_accuracy"],
            "epochs_phase1": end["epochs"],
            "first_phase_test_accuracy": first.get("test_accuracy", float("nan")),
            "first_phase_train_accuracy": first.get("train_accuracy", float("nan")),
            "epochs_phase0": first.get("epochs", 0),
        }

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "batches": self.batches.get_state(),
            "aug": self.aug.get_state(),
            "rows": self.rows,
            "epoch": self.epoch,
            "ends": self.ends,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.batches.set_state(state["batches"])
        self.aug.set_state(state["aug"])
        self.rows = [tuple(r) for r in state["rows"]]
        self.epoch = state["epoch"]
        self.ends = {int(k): v for k, v in state["ends"].items()}


class WarmStart:
    """The runs of one ``warm_start`` population (see ``lop_core.experiment.TRAINERS``).

    A unit of training is a phase (``total`` = 2): checkpoints are written between the phases.
    Runs train one after another.
    """

    unit = "phase"

    def __init__(self, cfgs, device=None, data_root=None, compile: bool = False):
        if compile:
            raise ValueError("warm_start does not support compile")
        self.cfgs = list(cfgs)
        self.device = resolve_device(device)
        c = self.cfgs[0]
        data = load_dataset(c.dataset, data_root, c.data_dir).to(self.device)  # kept on the device
        self.runs = [_Run(cfg, data, self.device) for cfg in self.cfgs]
        self.task, self.total = 0, 2

    @staticmethod
    def require_data(data_root=None) -> None:
        load_dataset("imagefolder", data_root, "cifar10")

    @property
    def rows(self) -> list[list[tuple]]:
        return [r.rows for r in self.runs]

    def train_task(self) -> dict[str, list[float]]:
        out = [r.train_phase(self.task) for r in self.runs]
        self.task += 1
        return {"online_accuracy": [v if v == v else 0.0 for v in out]}  # nan: a fresh run's phase 0

    def summaries(self) -> list[dict]:
        return [r.summary() for r in self.runs]

    def state_dict(self) -> dict:
        return {"task": self.task, "runs": [r.state_dict() for r in self.runs]}

    def load_state_dict(self, state: dict) -> None:
        self.task = state["task"]
        for run, s in zip(self.runs, state["runs"], strict=True):
            run.load_state_dict(s)
