"""The trainer of ``continual_mnist``: plain networks on a stream of MNIST tasks (findings B1, B3-B5).

Every run keeps a fixed set of ``examples_per_task`` MNIST training images (its own seeded choice).
Task t gives them a new pixel permutation or new random labels; the run trains ``epochs_per_task``
epochs on them (Adam, optional dropout and noise injection), then is measured in eval mode on
the first ``probe_size`` images of the task (``measure``): frozen units per layer and how many
stay frozen, the gradient that frozen and live units receive, duplicate units, ranks, weight
magnitude, the accuracy on the whole task and, for permuted tasks, the held-out accuracy: the
10,000 MNIST test images under the task's permutation (``test_accuracy``; random labels have no
held-out counterpart). Runs of a population train one after another (a
CPU-sized benchmark); each run's randomness is its own, so a run computes the same alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lop_core import mechanisms, metrics
from lop_core.data import load_mnist, seeded_generator
from lop_core.models.feedforward import MLP
from lop_core.train import resolve_device


class _Run:
    """One run: its images, model, optimizer and generators."""

    def __init__(self, cfg, images: torch.Tensor, labels: torch.Tensor, device: torch.device, test=None):
        self.cfg = cfg
        self.test = None  # held-out images [M, 784] and labels [M]
        if test is not None:
            self.test = (test[0].to(device=device, dtype=torch.float32).div_(255.0), test[1].to(device))
        pick = torch.randperm(len(images), generator=seeded_generator(cfg.seed, stream=1))
        pick = pick[: cfg.examples_per_task]
        self.x = images[pick].to(device=device, dtype=torch.float32).div_(255.0)  # [N, 784]
        self.labels = labels[pick].to(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)  # the initial weights: torch's default init, seeded
            self.model = MLP(784, cfg.width, cfg.depth, 10, cfg.activation, cfg.norm, cfg.dropout).to(device)
        params = self.model.parameters()
        if cfg.optimizer == "adam":
            self.opt = torch.optim.Adam(params, lr=cfg.step_size)
        else:
            self.opt = torch.optim.SGD(params, lr=cfg.step_size)
        self.batches = seeded_generator(cfg.seed, stream=2)  # example order and noise
        self.tasks = seeded_generator(cfg.seed, stream=3)  # permutations and labellings
        self.frozen: torch.Tensor | None = None  # frozen units at the end of the previous task
        self.rows: list[tuple] = []

    def new_task(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The task's inputs [N, 784], labels [N] and pixel permutation (None for new labels)."""
        n = len(self.x)
        if self.cfg.task == "permuted":
            perm = torch.randperm(784, generator=self.tasks).to(self.x.device)
            return self.x[:, perm], self.labels, perm
        return self.x, torch.randint(0, 10, (n,), generator=self.tasks).to(self.x.device), None

    def train_task(self, t: int) -> float:
        """Train on task ``t``, measure, and return the online (pre-update) accuracy of the task."""
        c = self.cfg
        x, y, perm = self.new_task()
        torch.manual_seed(c.seed * 1_000_003 + t)  # dropout masks: per run and task, resumable
        self.model.train()
        correct, seen = torch.zeros(()), 0
        for _ in range(c.epochs_per_task):
            order = torch.randperm(len(x), generator=self.batches).to(x.device)
            for start in range(0, len(x) - c.batch_size + 1, c.batch_size):  # full batches only
                idx = order[start : start + c.batch_size]
                self.opt.zero_grad()
                logits = self.model(x[idx])
                F.cross_entropy(logits, y[idx]).backward()
                mechanisms.perturb_gradients(self.model.parameters(), c.noise, self.batches)
                self.opt.step()
                correct += (logits.detach().argmax(1) == y[idx]).sum().cpu()
                seen += len(idx)
        online = float(correct) / seen
        self.record(t, "online_accuracy", "all", online)
        self.measure(t, x, y)
        if perm is not None and self.test is not None:
            self.model.eval()
            with torch.no_grad():
                held_out = (self.model(self.test[0][:, perm]).argmax(1) == self.test[1]).float().mean()
            self.model.train()
            self.record(t, "test_accuracy", "all", held_out)
        return online

    def record(self, task: int, metric: str, layer: str, value) -> None:
        self.rows.append((task, metric, layer, float(value.detach() if torch.is_tensor(value) else value)))

    def measure(self, t: int, x: torch.Tensor, y: torch.Tensor) -> None:
        """Units of the trained network on the probe images of task ``t`` (eval mode)."""
        c, model = self.cfg, self.model
        model.eval()
        with torch.no_grad():
            acc = (model(x).argmax(1) == y).float().mean()
        self.record(t, "train_accuracy", "all", acc)
        model.zero_grad()
        F.cross_entropy(model(x[: c.probe_size]), y[: c.probe_size]).backward()
        feats = [h.detach() for h in model.features]  # depth x [P, width]
        grads = mechanisms.incoming_grad_norms(model)  # depth x [width]
        model.zero_grad()
        frozen = []
        for k, h in enumerate(feats, start=1):
            mask = mechanisms.frozen_units(h, c.activation)
            frozen.append(mask)
            self.record(t, "frozen_fraction", str(k), mask.float().mean())
            self.record(t, "duplicate_fraction", str(k), metrics.duplicate_fraction(h))
            self.record(t, "effective_rank", str(k), metrics.effective_rank(h))
        mask, g = torch.cat(frozen), torch.cat(grads)
        self.record(t, "frozen_fraction", "all", mask.float().mean())
        self.record(t, "duplicate_fraction", "all", metrics.layer_mean_duplicate_fraction(feats))
        self.record(t, "live_grad", "all", g[~mask].mean() if (~mask).any() else float("nan"))
        if mask.any():  # mean incoming-gradient norm of the frozen units
            self.record(t, "frozen_grad", "all", g[mask].mean())
        if self.frozen is not None and self.frozen.any():
            self.record(t, "frozen_persistence", "all", mechanisms.persistence(self.frozen, mask))
        self.frozen = mask
        last = feats[-1]
        self.record(t, "threshold_rank", str(c.depth), metrics.threshold_rank(last))
        self.record(t, "weight_magnitude", "all", metrics.mean_abs(list(model.parameters()), run_dims=0))
        model.train()

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "batches": self.batches.get_state(),
            "tasks": self.tasks.get_state(),
            "frozen": self.frozen,
            "rows": self.rows,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.batches.set_state(state["batches"])
        self.tasks.set_state(state["tasks"])
        self.frozen = state["frozen"]
        self.rows = [tuple(r) for r in state["rows"]]


class ContinualMNIST:
    """The runs of one ``continual_mnist`` population (see ``lop_core.experiment.TRAINERS``).

    Args:
        cfgs: the runs' configs (``lop_core.mechanism_config.ContinualMNISTConfig``).
        device: ``auto`` (CUDA if available), ``cpu``, ...
        data_root: MNIST root (``lop_core.data.data_root``).
        compile: not supported (a CPU-sized benchmark); must be False.
    """

    unit = "task"

    def __init__(self, cfgs, device=None, data_root=None, compile: bool = False):
        if compile:
            raise ValueError("continual_mnist does not support compile")
        self.cfgs = list(cfgs)
        self.device = resolve_device(device)
        images, labels = load_mnist(data_root)
        test = load_mnist(data_root, train=False)
        self.runs = [_Run(c, images, labels, self.device, test) for c in self.cfgs]
        self.task = 0
        self.total = self.cfgs[0].num_tasks

    @staticmethod
    def require_data(data_root=None) -> None:
        load_mnist(data_root)

    @property
    def rows(self) -> list[list[tuple]]:
        return [r.rows for r in self.runs]

    def train_task(self) -> dict[str, list[float]]:
        out = [r.train_task(self.task) for r in self.runs]
        self.task += 1
        return {"online_accuracy": out}

    def summaries(self) -> list[dict]:
        out = []
        for run in self.runs:
            acc = [v for (_, m, _, v) in run.rows if m == "train_accuracy"]
            tail = acc[-max(1, len(acc) // 10) :]
            out.append(
                {
                    "first_task_accuracy": acc[0],
                    "final_accuracy": sum(tail) / len(tail),
                    "tasks_done": len(acc),
                    "activation": run.cfg.activation,
                    "norm": run.cfg.norm,
                    "dropout": run.cfg.dropout,
                    "noise": run.cfg.noise,
                    "task": run.cfg.task,
                }
            )
        return out

    def state_dict(self) -> dict:
        return {"task": self.task, "runs": [r.state_dict() for r in self.runs]}

    def load_state_dict(self, state: dict) -> None:
        self.task = state["task"]
        for run, s in zip(self.runs, state["runs"], strict=True):
            run.load_state_dict(s)
