"""The training loop of a population of permuted-MNIST runs (reference_code.md §1.2-§1.5).

Per step: forward on every run's batch, online (pre-update) accuracy and loss, backward,
optimizer step, then the method's ``after_step`` hook. Per task: at its start, before any training
on it, the correlates are measured on a probe batch of the new task. Everything per step stays on
the device; the per-task numbers are copied to the host once per task.

A run whose loss stops being finite has *diverged*: the first such step is noted on the device at
every step and read once per task; the run is then frozen and recorded no further, while the other
runs of its population, which never mix with it, go on exactly as without it.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F

from lop_core import metrics
from lop_core.config import method_key
from lop_core.data import PermutedMNIST, load_mnist, seeded_generator
from lop_core.methods import METHODS, Method
from lop_core.models import PopulationMLP
from lop_core.optim import SGDW, AdamW
from lop_core.run_slices import RunSlice

#: The gradient magnitude (mean |g| over all parameters) is averaged over every GRAD_EVERY-th step
#: of a task: an unbiased estimate of the per-task mean of every step at a tenth of the cost.
GRAD_EVERY = 10
#: What the loop itself sums per task, in the order its rows are written.
LOOP_METRICS = ("online_accuracy", "online_loss", "grad_magnitude")


def frozen_fraction(h: torch.Tensor, activation: str) -> torch.Tensor:
    """Dead (ReLU family: exactly zero on every probe input) or saturated units, ``[...]``."""
    if activation in metrics.FROZEN_BOUNDS:
        return metrics.saturated_fraction(h, *metrics.FROZEN_BOUNDS[activation])
    return metrics.dead_fraction(h)


def method_groups(cfgs) -> list[tuple[int, int]]:
    """Contiguous ``(start, stop)`` blocks of ``cfgs`` with one ``method_key`` each.

    Raises:
        ValueError: a method key comes back after another one (sort the runs by it first).
    """
    blocks: list[tuple[int, int]] = []
    keys: list[tuple] = []
    for r, cfg in enumerate(cfgs):
        key = method_key(cfg)
        if keys and keys[-1] == key:
            blocks[-1] = (blocks[-1][0], r + 1)
            continue
        if key in keys:
            raise ValueError(f"the runs of method {cfg.method} {dict(key[1])} must be next to each other")
        keys.append(key)
        blocks.append((r, r + 1))
    return blocks


def resolve_device(device: str | None) -> torch.device:
    """``None``/``"auto"`` means CUDA when available, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _row_order(metric: str) -> tuple[int, str]:
    return (LOOP_METRICS.index(metric), "") if metric in LOOP_METRICS else (len(LOOP_METRICS), metric)


class Population:
    """R runs of one architecture, trained in lockstep.

    The runs may use different methods: every block of runs with one ``method_key`` (they must be
    contiguous, see ``method_groups``) gets its own method object on a ``RunSlice``, which acts
    on those runs alone.

    Args:
        cfgs: the runs' configs; they must share a ``config.population_key``.
        device: where to train (``"auto"``: CUDA if available).
        data_root: MNIST root (see ``lop_core.data.data_root``).
        compile: capture the forward and backward pass with ``torch.compile`` (on a GPU with CUDA
            graphs, ``mode="reduce-overhead"``): the same numbers, far less launch overhead.
        dtype: floating-point type of the weights, the optimizer state and the inputs (default
            float32, what every run in ``runs/`` used). float64 makes the rounding difference
            between a population and its runs trained alone (batched vs single matrix products)
            about 1e-16, so that comparisons (SWR's threshold, the unit rankings) take the same
            choices on every build: the population-equivalence tests use it.
    """

    def __init__(self, cfgs, device=None, data_root=None, compile: bool = False, dtype=torch.float32):
        from lop_core.config import population_key

        keys = {population_key(c) for c in cfgs}
        if len(keys) != 1:
            raise ValueError("a population needs configs that differ only in per-run fields")
        self.cfgs = list(cfgs)
        c = self.cfgs[0]
        self.device = resolve_device(device)
        seeds = [cfg.seed for cfg in self.cfgs]
        self.stream = PermutedMNIST(seeds, c.batch_size, self.device, data_root, dtype=dtype)
        init_gens = [seeded_generator(s, stream=0) for s in seeds]
        self.model = PopulationMLP(
            init_gens,
            784,
            c.width,
            c.depth,
            10,
            c.activation,
            c.layer_norm,
            self.device,
            c.skip_connections,
            c.init,
        ).to(dtype)
        params = [p for _, p in self.model.parameter_groups()]
        lr = [cfg.step_size for cfg in self.cfgs]
        l2 = [cfg.l2_factor for cfg in self.cfgs]
        if c.optimizer == "sgdw":
            self.optimizer = SGDW(params, lr, l2, momentum=[cfg.momentum for cfg in self.cfgs])
        else:
            betas = ([cfg.momentum for cfg in self.cfgs], [cfg.beta2 for cfg in self.cfgs])
            self.optimizer = AdamW(params, lr, l2, betas=betas)
        self.method_generators = [seeded_generator(s, stream=2) for s in seeds]
        #: ((start, stop), slice or None, method) per block of runs of one method
        self.methods = []
        blocks = method_groups(self.cfgs)
        for a, b in blocks:
            view = RunSlice(self.model, self.optimizer, a, b) if len(blocks) > 1 else None
            model, opt = (view.model, view.optimizer) if view else (self.model, self.optimizer)
            method = METHODS[self.cfgs[a].method](model, opt, self.cfgs[a:b], self.method_generators[a:b])
            self.methods.append(((a, b), view, method))
        self._forward_loss = self._eager_forward_loss
        if compile:
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self._forward_loss = torch.compile(self._eager_forward_loss, mode=mode, dynamic=False)
        self.task = 0  # the next task to train
        self.total = cfgs[0].num_tasks  # tasks in a run
        self.unit = "task"  # what one train_task() call trains (for progress bars)
        self.rows: list[list[tuple]] = [[] for _ in self.cfgs]  # per run: (task, metric, layer, value)
        #: per run: None, or where it diverged ({"diverged_step": ..., "diverged_task": ...})
        self.diverged: list[dict | None] = [None] * len(self.cfgs)
        # first non-finite step of every run (-1: none yet), kept on the device: no sync per step
        self._bad_step = torch.full((len(self.cfgs),), -1, dtype=torch.long, device=self.device)
        #: bool [R], True for a frozen (diverged) run; None while every run is live
        self._frozen: torch.Tensor | None = None
        #: per method metric (``reset_units``, ...), the runs whose method reports it
        self._reported: dict[str, set[int]] = {}

    @property
    def num_runs(self) -> int:
        return len(self.cfgs)

    @staticmethod
    def require_data(data_root=None) -> None:
        """Raise ``DataError`` unless MNIST is under ``data_root`` or can be downloaded there."""
        load_mnist(data_root)

    def _record(self, task: int, metric: str, layer: str, values: torch.Tensor, only=None) -> None:
        """Append a row per live run (of the runs ``only``, when given: a method's own counts)."""
        for run, v in enumerate(values.tolist()):
            if self.diverged[run] is None and (only is None or run in only):
                self.rows[run].append((task, metric, layer, float(v)))

    @torch.no_grad()
    def measure_correlates(self, task: int) -> None:
        """The plasticity correlates at the start of ``task`` (§1.5): a probe batch of the task."""
        c = self.cfgs[0]
        x, _ = self.stream.probe(c.probe_size)
        self.model(x)
        # depth x [R, P, width]; a run about to be found diverged may hold non-finite values, which
        # would make the batched SVDs below fail for every run: they count as zeros
        feats = [h.nan_to_num(0.0, 0.0, 0.0) for h in self.model.features]
        for k, h in enumerate(feats, start=1):
            self._record(task, "dead_fraction", str(k), frozen_fraction(h, c.activation))
            self._record(task, "duplicate_fraction", str(k), metrics.duplicate_fraction(h))
        every = torch.cat(feats, dim=-1)  # [R, P, depth * width]
        self._record(task, "dead_fraction", "all", frozen_fraction(every, c.activation))
        self._record(task, "duplicate_fraction", "all", metrics.layer_mean_duplicate_fraction(feats))
        last = feats[-1]
        self._record(task, "threshold_rank", str(c.depth), metrics.threshold_rank(last))
        self._record(task, "effective_rank", str(c.depth), metrics.effective_rank(last))
        self._record(task, "stable_rank", str(c.depth), metrics.stable_rank(last))
        params = [p for _, p in self.model.parameter_groups()]
        self._record(task, "weight_magnitude", "all", metrics.mean_abs(params))
        if c.layer_norm:
            self._record(task, "ln_gain_magnitude", "all", metrics.mean_abs(list(self.model.ln_gains)))

    def _eager_forward_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [R, B, 10] and each run's own batch-mean cross-entropy [R]."""
        logits = self.model(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
        return logits, loss.view(self.num_runs, -1).mean(dim=1)

    def step(self, s: int, sums: dict[str, torch.Tensor]) -> None:
        """One SGD step of every run on batch ``s`` of the current task.

        Adds the online (pre-update) accuracy and loss and the method's counts into ``sums``,
        on the device: nothing here waits for the device.
        """
        steps = self.cfgs[0].steps_per_task
        x, y = self.stream.batch(s)  # [R, B, 784], [R, B]
        self.optimizer.zero_grad()
        logits, loss = self._forward_loss(x, y)
        loss.sum().backward()  # runs are independent: d(sum)/d(theta_r) = d(loss_r)/d(theta_r)
        with torch.no_grad():
            sums["online_accuracy"] += (logits.argmax(-1) == y).float().mean(dim=1)
            sums["online_loss"] += loss.detach()
            if s % GRAD_EVERY == 0:
                sums["grad_magnitude"] += metrics.mean_abs([p.grad for p in self.optimizer.params])
            first_bad = ~torch.isfinite(loss) & (self._bad_step < 0)
            self._bad_step.masked_fill_(first_bad, self.task * steps + s + 1)  # counted like after_step
        self._call_methods("before_step", self.task * steps + s + 1, sums)
        self.optimizer.step()
        self._call_methods("after_step", self.task * steps + s + 1, sums)
        if self._frozen is not None:  # nothing (decay, noise, a reset) moves a frozen run's zeros
            self._zero_frozen()

    def _call_methods(self, hook: str, arg: int, sums: dict[str, torch.Tensor]) -> None:
        """Call every method's ``hook`` and add what it reports into ``sums`` at its own runs."""
        for (a, b), view, method in self.methods:
            if getattr(type(method), hook) is getattr(Method, hook):
                continue  # the plain hook does nothing
            if view is not None:
                view.refresh()
            for key, value in (getattr(method, hook)(arg) or {}).items():
                sums[key][a:b] += value
                self._reported.setdefault(key, set()).update(range(a, b))

    def train_task(self) -> dict[str, list[float]]:
        """Train every run for one task; returns per-run means (accuracy, loss) and counts of the task."""
        c, t = self.cfgs[0], self.task
        self.stream.new_task()
        self.measure_correlates(t)
        sums = defaultdict(lambda: torch.zeros(self.num_runs, device=self.device))
        self._call_methods("on_task_start", t, sums)
        steps = c.steps_per_task
        for s in range(steps):
            self.step(s, sums)
        sampled = len(range(0, steps, GRAD_EVERY))
        self._stop_diverged(t)
        out = {}
        # a fixed order of rows, whichever method reported first (a mixed population's rows for a run
        # are then those of the run alone): the loop's own numbers, then the methods' counts by name
        for key in sorted(sums, key=_row_order):
            total = sums[key]
            if key == "grad_magnitude":
                total = total / sampled
            elif key in ("online_accuracy", "online_loss"):
                total = total / steps
            self._record(t, key, "all", total, self._reported.get(key))
            out[key] = total.tolist()
        self.task += 1
        return out

    @torch.no_grad()
    def _stop_diverged(self, task: int) -> None:
        """Mark and freeze the runs whose loss (or weights) stopped being finite during ``task``.

        A diverged run keeps only the rows of the tasks before ``task``. It is frozen for good: its
        weights are zeroed and its step size set to 0, and after every later step its weights are
        zeroed again, so that no decay, noise or reset of a method moves them and no NaN reaches
        the correlates' SVDs; a resumed population freezes it again from ``diverged``. The other
        runs never read its entries, so their numbers do not change.
        """
        params = self.optimizer.params
        finite = torch.stack([p.isfinite().flatten(1).all(dim=1) for p in params]).all(dim=0)  # [R]
        last = (task + 1) * self.cfgs[0].steps_per_task
        self._bad_step.masked_fill_(~finite & (self._bad_step < 0), last)
        for run, step in enumerate(self._bad_step.tolist()):
            if step < 0 or self.diverged[run] is not None:
                continue
            self.diverged[run] = {"diverged_step": step, "diverged_task": task}
            self.rows[run] = [row for row in self.rows[run] if row[0] < task]
        self._freeze()

    @torch.no_grad()
    def _freeze(self) -> None:
        """Stop every diverged run: step size 0, optimizer state 0, weights 0 (see ``_stop_diverged``)."""
        frozen = [d is not None for d in self.diverged]
        if not any(frozen):
            return
        for run in [r for r, f in enumerate(frozen) if f]:
            self.optimizer.stop_run(run)
        self._frozen = torch.tensor(frozen, device=self.device)
        self._zero_frozen()

    @torch.no_grad()
    def _zero_frozen(self) -> None:
        for p in self.optimizer.params:  # masked_fill, not a product: it clears NaN too
            p.masked_fill_(self._frozen.view(-1, *[1] * (p.dim() - 1)), 0.0)

    def summaries(self) -> list[dict[str, float]]:
        """Headline numbers of every run from the rows recorded so far (none for a diverged run)."""
        out = []
        for rows, diverged in zip(self.rows, self.diverged, strict=True):
            acc = [v for (_, m, _, v) in rows if m == "online_accuracy"]
            if diverged or not acc:
                out.append({"tasks_done": len(acc)})
                continue
            tail = acc[-max(1, len(acc) // 10) :]
            out.append(
                {
                    "mean_online_accuracy": sum(acc) / len(acc),
                    "first_task_accuracy": acc[0],
                    "final_accuracy": sum(tail) / len(tail),
                    "tasks_done": len(acc),
                }
            )
        return out

    def state_dict(self) -> dict:
        return {
            "task": self.task,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "methods": [method.state_dict() for _, _, method in self.methods],
            "stream": self.stream.state_dict(),
            "method_generators": [g.get_state() for g in self.method_generators],
            "rows": self.rows,
            "diverged": self.diverged,
            "bad_step": self._bad_step,
        }

    def load_state_dict(self, state: dict) -> None:
        self.task = state["task"]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        saved = state["methods"]
        if len(saved) != len(self.methods):
            raise ValueError(
                f"the checkpoint holds {len(saved)} method blocks, these runs have {len(self.methods)}"
            )
        for (_, _, method), s in zip(self.methods, saved, strict=True):
            method.load_state_dict(s)
        self.stream.load_state_dict(state["stream"])
        for g, s in zip(self.method_generators, state["method_generators"], strict=True):
            g.set_state(s)
        self.rows = [list(map(tuple, rows)) for rows in state["rows"]]
        # checkpoints written before divergence was tracked have neither key
        self.diverged = list(state.get("diverged", [None] * self.num_runs))
        if "bad_step" in state:
            self._bad_step.copy_(state["bad_step"])
        self._freeze()  # the step sizes are not in the optimizer's state: stop the diverged runs again
