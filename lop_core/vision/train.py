"""Class-incremental training of a ViT (reference_code.md §4.3-§4.6): the ``incremental_cifar`` trainer.

Per run: the classes come in a random order per seed, ``classes_per_task`` more every
``epochs_per_task`` epochs; the training, validation and test sets always hold every class seen so
far, and the logits are restricted to those classes. Every task gets a fresh one-cycle schedule;
after every epoch the validation and test accuracy are measured (no augmentation), the weights
with the best validation accuracy of the task are kept, and at the task's end they are restored
and carried to the next task (the momentum of the last epoch is kept, as in the reference, §8
bug 12). Per step: augmented batch -> forward (bf16 autocast on a GPU) -> cross-entropy over the
seen classes -> backward -> SGD step -> schedule step (and the weight decay that follows it) ->
the method's ``after_step``. A non-finite training loss marks the run *diverged* (our rule; the
reference excluded such seeds by hand, §4.7): it stops, keeping the epochs before.

One unit of ``train_task`` is one epoch of every run. The runs of a population train one after
another, each with its own generators and its own copy of the global RNG (dropout), so a run's
numbers do not depend on the others; a checkpoint at any epoch end resumes exactly.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from lop_core.data import seeded_generator
from lop_core.models.vit import ViT
from lop_core.train import resolve_device
from lop_core.vision import measure
from lop_core.vision.augment import augment, normalize
from lop_core.vision.data import class_order, first_per_class, load_dataset
from lop_core.vision.methods import make_method

EVAL_CHUNK = 500  # images per evaluation forward pass


def make_optimizer(model: ViT, cfg) -> torch.optim.SGD:
    """SGD with momentum and coupled weight decay; with ``wd_on_1d_params=False`` a second, undecayed group."""
    named = list(model.named_parameters())
    if cfg.wd_on_1d_params:
        groups = [{"params": [p for _, p in named], "weight_decay": cfg.weight_decay}]
    else:
        groups = [
            {"params": [p for n, p in named if model.decayed(n)], "weight_decay": cfg.weight_decay},
            {"params": [p for n, p in named if not model.decayed(n)], "weight_decay": 0.0},
        ]
    return torch.optim.SGD(groups, lr=cfg.step_size, momentum=cfg.momentum)


class Run:
    """One run: its ViT, optimizer, schedule, method, class order, generators and metric rows.

    Args:
        cfg: the run's config.
        data: the data set on the training device (``vision.data.ImageData``).
        splits: indices of the training, validation and test images (``splits`` of the trainer).
        device: the training device.
        compile: train through ``torch.compile(model)`` (evaluation stays eager).
    """

    def __init__(self, cfg, data, splits, device, compile=False):
        self.cfg, self.data, self.device = cfg, data, device
        self.train_idx, self.val_idx, self.test_idx = splits
        order = class_order(cfg.seed, len(data.classes))[: cfg.num_classes]
        self.class_order = order.tolist()
        rank = torch.full((len(data.classes),), cfg.num_classes)  # classes outside the stream: never seen
        rank[order] = torch.arange(cfg.num_classes)
        self.rank = rank.to(device)  # data-set label -> position in the run's class order = its logit
        self.mean = torch.tensor(data.mean, device=device)
        self.std = torch.tensor(data.std, device=device)
        self.model = ViT(
            cfg.num_classes, cfg.image_size, cfg.patch, cfg.width, cfg.depth, cfg.heads, cfg.mlp,
            cfg.dropout, cfg.layer_norm, seeded_generator(cfg.seed, stream=0), device,
        )  # fmt: skip
        self.model.keep_features = cfg.method in ("cbp", "redo")
        self.forward = torch.compile(self.model) if compile else self.model
        self.sgd = make_optimizer(self.model, cfg)
        self.method = make_method(cfg, self.model, self.sgd)
        self.order_gen = seeded_generator(cfg.seed, stream=3)  # example order of every epoch
        self.aug_gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + 4)
        self.rng = self._initial_rng(cfg.seed * 1000 + 5)  # the global RNG's state while this run trains
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
        self.epoch, self.step = 0, 0
        self.schedule = None
        self.best: dict | None = None  # the task's best validation: accuracy, weights, their test accuracy
        self.max_test = -1.0
        self.rows: list[tuple] = []  # (epoch, metric, layer, value)
        self.diverged: dict | None = None
        self._enter_task(0)

    # ---- RNG ------------------------------------------------------------------------------------

    def _initial_rng(self, seed: int) -> dict:
        state = {"cpu": torch.Generator().manual_seed(seed).get_state()}
        if self.device.type == "cuda":
            with torch.random.fork_rng(devices=[self.device]):
                torch.cuda.manual_seed(seed)
                state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    @contextmanager
    def own_rng(self):
        """Swap this run's global RNG state in (dropout draws from it) and back out."""
        saved = {"cpu": torch.get_rng_state()}
        torch.set_rng_state(self.rng["cpu"])
        if "cuda" in self.rng:
            saved["cuda"] = torch.cuda.get_rng_state(self.device)
            torch.cuda.set_rng_state(self.rng["cuda"], self.device)
        try:
            yield
        finally:
            self.rng = {"cpu": torch.get_rng_state()}
            torch.set_rng_state(saved["cpu"])
            if "cuda" in saved:
                self.rng["cuda"] = torch.cuda.get_rng_state(self.device)
                torch.cuda.set_rng_state(saved["cuda"], self.device)

    # ---- tasks ----------------------------------------------------------------------------------

    def _enter_task(self, task: int) -> None:
        """The classes and images of ``task``: the first ``classes_per_task * (task + 1)`` of the order."""
        self.task, self.seen = task, self.cfg.classes_per_task * (task + 1)

        def of_seen(idx, labels):
            return idx[self.rank[labels[idx]] < self.seen]

        self.task_train = of_seen(self.train_idx, self.data.train_y)
        self.task_val = of_seen(self.val_idx, self.data.train_y)
        self.task_test = of_seen(self.test_idx, self.data.test_y)
        self.steps_per_epoch = len(self.task_train) // self.cfg.batch_size
        if self.steps_per_epoch * self.cfg.epochs_per_task < 2:
            raise ValueError(
                f"task {task} has {len(self.task_train)} training images: fewer than two batches of "
                f"{self.cfg.batch_size} in all its epochs; lower batch_size or raise train_per_class"
            )

    def _new_schedule(self) -> None:
        """A fresh one-cycle schedule over the task's steps (reference §4.4)."""
        c = self.cfg
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(
            self.sgd,
            max_lr=c.step_size,
            total_steps=c.epochs_per_task * self.steps_per_epoch,
            anneal_strategy="linear",
            cycle_momentum=c.cycle_momentum,
        )
        self._set_decay()

    def _set_decay(self) -> None:
        """Not rescaled (the reference's default): wd / lr, so that lr * wd stays ``weight_decay``.

        Only the first (decayed) group; the last step's slightly negative learning rate is skipped.
        """
        group = self.sgd.param_groups[0]
        if not self.cfg.rescaled_wd and group["lr"] > 0:
            group["weight_decay"] = self.cfg.weight_decay / group["lr"]

    def _start_task(self, task: int) -> None:
        self._enter_task(task)
        self.counts = self.method.on_task_start(task) or {}
        self._new_schedule()
        self.best, self.max_test = None, -1.0

    # ---- training and evaluation ----------------------------------------------------------------

    def _batch(self, idx: torch.Tensor, train: bool):
        x = normalize(self.data.train_x[idx] if train else self.data.test_x[idx], self.mean, self.std)
        return x, self.rank[(self.data.train_y if train else self.data.test_y)[idx]]

    def train_epoch(self) -> float:
        """One epoch (starting a task first when one is due); returns its online training accuracy."""
        c, e = self.cfg, self.epoch
        if e % c.epochs_per_task == 0:
            self._start_task(e // c.epochs_per_task)
        else:
            self.counts = {}
        self.model.train()
        b, dev = c.batch_size, self.device
        order = torch.randperm(len(self.task_train), generator=self.order_gen).to(dev)
        loss_sum, correct = torch.zeros((), device=dev), torch.zeros((), device=dev)
        bad_step = torch.full((), -1, dtype=torch.long, device=dev)
        for s in range(self.steps_per_epoch):
            loss, logits, y, info = self.train_step(self.task_train[order[s * b : (s + 1) * b]])
            with torch.no_grad():
                loss_sum += loss.detach()
                correct += (logits.argmax(-1) == y).float().mean()
                bad_step.masked_fill_(~torch.isfinite(loss.detach()) & (bad_step < 0), self.step)
                for key, value in info.items():
                    self.counts[key] = self.counts.get(key, 0) + value.sum()
        if int(bad_step) >= 0:
            self.diverged = {"diverged_step": int(bad_step), "diverged_epoch": e}
            self.rows = [row for row in self.rows if row[0] < e]
            self.epoch += 1
            return math.nan
        accuracy = float(correct) / self.steps_per_epoch
        self._end_epoch(float(loss_sum) / self.steps_per_epoch, accuracy)
        return accuracy

    def train_step(self, idx: torch.Tensor):
        """One SGD step on the training images ``idx``; returns (loss, logits, labels, method counts)."""
        x, y = self._batch(idx, train=True)
        x = augment(x, self.aug_gen)
        with self.autocast:
            logits = self.forward(x)[:, : self.seen]  # only the classes seen so far
        loss = F.cross_entropy(logits.float(), y)
        self.sgd.zero_grad(set_to_none=True)
        loss.backward()
        self.sgd.step()
        self.schedule.step()
        self._set_decay()
        self.step += 1
        return loss, logits, y, self.method.after_step(self.step) or {}

    @torch.no_grad()
    def accuracy(self, idx: torch.Tensor, train: bool) -> float:
        """Accuracy over the seen classes of the images ``idx`` (eval mode, never augmented)."""
        self.model.eval()
        correct = 0
        for chunk in idx.split(EVAL_CHUNK):
            x, y = self._batch(chunk, train)
            with self.autocast:
                logits = self.model(x)[:, : self.seen]
            correct += int((logits.argmax(-1) == y).sum())
        return correct / max(1, len(idx))

    def _record(self, metric: str, layer: str, value) -> None:
        self.rows.append((self.epoch, metric, layer, float(value)))

    def _end_epoch(self, train_loss: float, train_accuracy: float) -> None:
        val = self.accuracy(self.task_val, train=True)
        test = self.accuracy(self.task_test, train=False)
        if self.best is None or val > self.best["val"]:
            weights = {n: p.detach().clone() for n, p in self.model.named_parameters()}
            self.best = {"val": val, "test": test, "weights": weights}
        self.max_test = max(self.max_test, test)
        for metric, value in (
            ("task", self.task),
            ("classes", self.seen),
            ("train_loss", train_loss),
            ("train_accuracy", train_accuracy),
            ("val_accuracy", val),
            ("test_accuracy", test),
            *((key, float(v)) for key, v in sorted(self.counts.items())),
        ):
            self._record(metric, "all", value)
        for (metric, layer), value in measure.magnitudes(self.model).items():
            self._record(metric, layer, value)
        if (self.epoch + 1) % self.cfg.epochs_per_task == 0:
            self._end_task()
        self.epoch += 1

    @torch.no_grad()
    def _end_task(self) -> None:
        """Restore the task's best-validation weights (carried forward) and measure the hidden units."""
        for n, p in self.model.named_parameters():
            p.copy_(self.best["weights"][n])
        self._record("best_val_accuracy", "all", self.best["val"])
        self._record("carried_test_accuracy", "all", self.best["test"])
        self._record("best_test_accuracy", "all", self.max_test)  # the reference's headline (test-selected)
        probe = self.task_train[
            first_per_class(self.data.train_y[self.task_train], 0, self._probe_per_class())
        ]
        images = (self._batch(chunk, train=True)[0] for chunk in probe.split(EVAL_CHUNK))
        for (metric, layer), value in measure.hidden_units(self.model, images).items():
            self._record(metric, layer, value)

    def _probe_per_class(self) -> int:
        return -(-self.cfg.probe_size // self.seen)  # ceil

    # ---- checkpoints ----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "model": self.model.state_dict(),
            "sgd": self.sgd.state_dict(),
            "schedule": self.schedule.state_dict() if self.schedule is not None else None,
            "method": self.method.state_dict(),
            "method_generators": [g.get_state() for g in self.method.generators],
            "best": self.best,
            "max_test": self.max_test,
            "order_gen": self.order_gen.get_state(),
            "aug_gen": self.aug_gen.get_state(),
            "rng": self.rng,
            "rows": self.rows,
            "diverged": self.diverged,
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.step = state["epoch"], state["step"]
        self.model.load_state_dict(state["model"])
        self._enter_task(max(0, self.epoch - 1) // self.cfg.epochs_per_task)
        if state["schedule"] is not None:
            self._new_schedule()  # then the saved learning rates, momenta and decay overwrite its own
            self.schedule.load_state_dict(state["schedule"])
        self.sgd.load_state_dict(state["sgd"])
        self.method.load_state_dict(state["method"])
        for g, saved in zip(self.method.generators, state["method_generators"], strict=True):
            g.set_state(saved)
        self.best, self.max_test = state["best"], state["max_test"]
        self.order_gen.set_state(state["order_gen"])
        self.aug_gen.set_state(state["aug_gen"])
        self.rng = state["rng"]
        self.rows = [tuple(row) for row in state["rows"]]
        self.diverged = state["diverged"]

    def summary(self) -> dict:
        """Headline numbers from the rows so far (only the counts for a diverged run).

        ``mean_best_test_accuracy`` is the reference's sweep score: the mean over tasks of the best
        test accuracy of each task; ``mean_carried_test_accuracy`` that of the validation-selected
        weights each task hands on.
        """
        best = [v for (_, m, _, v) in self.rows if m == "best_test_accuracy"]
        carried = [v for (_, m, _, v) in self.rows if m == "carried_test_accuracy"]
        out = {"epochs_done": self.epoch, "tasks_done": len(best), "class_order": self.class_order}
        if best and self.diverged is None:
            out.update(
                mean_best_test_accuracy=sum(best) / len(best),
                mean_carried_test_accuracy=sum(carried) / len(carried),
                first_task_test_accuracy=best[0],
                last_task_test_accuracy=best[-1],
            )
        return out


class IncrementalCIFAR:
    """The ``incremental_cifar`` trainer (see ``lop_core.experiment.TRAINERS``): R runs, one epoch per unit.

    Args:
        cfgs: the runs' configs; they must share the data settings (a ``config.population_key``).
        device: ``auto`` (CUDA if available), ``cpu``, ``cuda``, ...
        data_root: the data root (default ``$LOP_DATA``).
        compile: train through ``torch.compile``.
    """

    def __init__(self, cfgs, device=None, data_root=None, compile: bool = False):
        c = cfgs[0]
        shared = ("dataset", "data_dir", "image_size", "train_per_class", "val_per_class", "test_per_class")
        if any(getattr(cfg, k) != getattr(c, k) for cfg in cfgs for k in shared):
            raise ValueError(f"the runs of one population must share {shared}")
        self.cfgs, self.device = list(cfgs), resolve_device(device)
        data = load_dataset(c.dataset, data_root, c.data_dir, c.image_size)
        if c.num_classes > len(data.classes):
            raise ValueError(f"{c.num_classes} classes needed, the data set has {len(data.classes)}")
        splits = [  # per class: the first val_per_class training images validate, the next ones train
            first_per_class(data.train_y, c.val_per_class, c.train_per_class).to(self.device),
            first_per_class(data.train_y, 0, c.val_per_class).to(self.device),
            first_per_class(data.test_y, 0, c.test_per_class).to(self.device),
        ]
        data = data.to(self.device)
        self.runs = [Run(cfg, data, splits, self.device, compile) for cfg in self.cfgs]
        self.task = 0  # epochs done (the unit of this trainer)
        self.total = c.total_epochs
        self.unit = "epoch"

    @property
    def rows(self) -> list[list[tuple]]:
        """Per run: (epoch, metric, layer, value) rows; the ``task`` column of the run store holds the epoch."""
        return [r.rows for r in self.runs]

    @property
    def diverged(self) -> list[dict | None]:
        return [r.diverged for r in self.runs]

    def train_task(self) -> dict[str, list[float]]:
        """One epoch of every run that has not diverged."""
        accuracies = []
        for run in self.runs:
            if run.diverged is not None:
                accuracies.append(math.nan)
                continue
            with run.own_rng():
                accuracies.append(run.train_epoch())
        self.task += 1
        return {"online_accuracy": accuracies}

    def summaries(self) -> list[dict]:
        return [r.summary() for r in self.runs]

    def state_dict(self) -> dict:
        return {"epoch": self.task, "runs": [r.state_dict() for r in self.runs]}

    def load_state_dict(self, state: dict) -> None:
        self.task = state["epoch"]
        for run, saved in zip(self.runs, state["runs"], strict=True):
            run.load_state_dict(saved)
