"""Every finding the book reproduces, as a claim in parts that ``lop_core.verdicts`` judges.

A ``Finding`` is the paper's claim in words plus ``Part`` s, each one test on the runs of a sweep:

* ``above`` / ``below``: the best group of ``first`` ends above (below) the best of ``second``;
* ``level``: the groups of ``first`` end level and have settled;
* ``declines``: the group's values fall over the run (last tenth below the best tenth);
* ``rises`` / ``falls``: last tenth against first tenth;
* ``anticorrelated``: across runs, ``metric`` of the first task against ``late_metric`` over the last
  tenth (Spearman, beyond 2 SE below 0).

A group is a name and a filter on the runs' columns (``{"method": "swr"}``). Resetting methods that
reset nothing, or runs equal to plain training, make their part "cannot tell" (``did_not_act``).
``evaluate`` judges a finding from the committed runs (paper scale when all of them exist);
``box`` writes the verdict box a chapter opens with; ``table`` the landing page's table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lop_core import verdicts
from lop_core.plotting import ACTIVATIONS


@dataclass(frozen=True)
class Part:
    """One test of a claim on the runs of ``sweep`` (see the module docstring for ``kind``)."""

    kind: str
    sweep: str | tuple[str, ...]
    first: dict
    second: dict = field(default_factory=dict)
    text: str = ""
    metric: str = "online_accuracy"
    late_metric: str = "online_accuracy"
    layer: str = "all"


@dataclass(frozen=True)
class Finding:
    key: str
    claim: str
    label: str
    parts: tuple[Part, ...]


@dataclass
class Result:
    """A finding judged: ``outcome``, and per part its text and ``verdicts.Verdict``; ``protocol``
    says which runs (preset, tasks, seeds) every sweep contributed."""

    finding: Finding
    outcome: str
    parts: list[tuple[Part, verdicts.Verdict]]
    protocol: dict[str, str]


KINDS = ("above", "below", "level", "declines", "rises", "falls", "anticorrelated")

_M = {"base": {"method": "base"}}
_UNITS = {"CBP": {"method": "cbp"}, "ReDo": {"method": "redo"}}
_SWR = {"SWR": {"method": "swr"}}
_REGS = {"L2": {"method": "l2"}, "Shrink & perturb": {"method": "shrink_perturb"}}


def _under(groups: dict, **where) -> dict:
    return {name: {**f, **where} for name, f in groups.items()}


_A9 = {"SGD": {"momentum": 0.0}, "SGD + momentum": {"optimizer": "sgdw", "momentum": 0.9}}
_A9["AdamW"] = {"optimizer": "adamw"}
_A7_ORDER = [(u, p) for u in ("gradient", "magnitude") for p in ("threshold", "proportional")]


def _swr(utility, pruning, reinit):
    return {"method": "swr", "utility": utility, "pruning": pruning, "reinit": reinit}


FINDINGS: dict[str, Finding] = {
    f.key: f
    for f in [
        Finding(
            "A1",
            "With plain SGD the online accuracy per task falls over the tasks (h = 100).",
            "finding-a1",
            (Part("declines", "a1", {"SGD": _M["base"]}, text="SGD's accuracy falls"),),
        ),
        Finding(
            "A2",
            "h = 100: SWR, CBP and ReDo keep plasticity about equally; L2 and shrink-and-perturb help less.",
            "finding-a2",
            (
                Part("level", "a2", {**_SWR, **_UNITS}, text="SWR, CBP and ReDo end level"),
                Part(
                    "above",
                    "a2",
                    {**_SWR, **_UNITS},
                    _REGS,
                    text="the resetting methods end above L2 and S&P",
                ),
            ),
        ),
        Finding(
            "A3",
            "h = 10: reinitializing weights (SWR) keeps more plasticity than reinitializing units.",
            "finding-a3",
            (Part("above", "a3", _SWR, _UNITS, text="SWR ends above CBP and ReDo"),),
        ),
        Finding(
            "A4",
            "With layer norm (h = 10 and h = 100), SWR keeps plasticity and the unit methods lose it.",
            "finding-a4",
            (
                Part("above", "a4", _SWR, _UNITS, text="h = 10: SWR ends above CBP and ReDo"),
                Part("above", "a4_large", _SWR, _UNITS, text="h = 100: SWR ends above CBP and ReDo"),
            ),
        ),
        Finding(
            "A5",
            "h = 1,000: reinitializing weights and units are equally effective.",
            "finding-a5",
            (Part("level", "a5", {**_SWR, **_UNITS}, text="SWR, CBP and ReDo end level"),),
        ),
        Finding(
            "A6",
            "As plain SGD loses plasticity (h = 100), dead units grow and the rank of the last layer falls.",
            "finding-a6",
            (
                Part("rises", "a2", {"SGD": _M["base"]}, text="dead units grow", metric="dead_fraction"),
                Part(
                    "falls",
                    "a2",
                    {"SGD": _M["base"]},
                    text="the rank falls",
                    metric="threshold_rank",
                    layer="3",
                ),
            ),
        ),
        Finding(
            "A7",
            "SWR's design: resampling beats setting to the mean, and threshold pruning with mean "
            "reinitialization loses plasticity (the thesis).",
            "finding-a7",
            (
                *(
                    Part(
                        "above",
                        "a7",
                        {"resample": _swr(u, p, "resample")},
                        {"mean": _swr(u, p, "mean")},
                        text=f"{u} utility, {p} pruning: resample ends above mean",
                    )
                    for u, p in _A7_ORDER
                ),
                Part(
                    "declines",
                    "long",
                    {"threshold + mean": _swr("gradient", "threshold", "mean")},
                    text="threshold + mean falls over 200 tasks",
                ),
            ),
        ),
        Finding(
            "A9",
            "Plasticity is lost with every optimizer (SGD, SGD with momentum, AdamW), and the remedies "
            "still act under each.",
            "finding-a9",
            (
                *(
                    Part(
                        "declines",
                        "a9",
                        {name: {**f, "method": "base"}},
                        text=f"{name}: plain training falls",
                    )
                    for name, f in _A9.items()
                ),
                *(
                    Part(
                        "above",
                        "a9",
                        _under({**_SWR, **_UNITS}, **_A9[name]),
                        {"plain": {**_A9[name], "method": "base"}},
                        text=f"{name}: the best resetting method ends above plain training",
                    )
                    for name in ("SGD + momentum", "AdamW")
                ),
            ),
        ),
        Finding(
            "A10",
            "Plasticity is lost with every activation (ReLU, leaky ReLU, tanh, sigmoid, GELU, SiLU).",
            "finding-a10",
            tuple(
                Part(
                    "declines",
                    "long" if act in ("tanh", "sigmoid", "gelu") else "a10",
                    {ACTIVATIONS[act]: {"activation": act, "skip_connections": False}},
                    text=f"{ACTIVATIONS[act]} falls"
                    + (" (200 tasks)" if act in ("tanh", "sigmoid", "gelu") else ""),
                )
                for act in ("relu", "leaky_relu", "tanh", "sigmoid", "gelu", "silu")
            ),
        ),
        Finding(
            "A11",
            "Plasticity is lost at every step size, faster for larger ones.",
            "finding-a11",
            tuple(
                Part(
                    "declines",
                    "long" if lr < 0.01 else "a11",
                    {f"step {lr:g}": {"step_size": lr, "activation": "relu", "method": "base"}},
                    text=f"step size {lr:g} falls" + (" (200 tasks)" if lr < 0.01 else ""),
                )
                for lr in (0.1, 0.05, 0.01, 0.005, 0.001)
            ),
        ),
        Finding(
            "A12",
            "ViT, class-incremental CIFAR, reparameterized layer norm: SWR keeps accuracy, CBP and "
            "ReDo degrade.",
            "finding-a12",
            (
                Part(
                    "above",
                    "a12",
                    _SWR,
                    _UNITS,
                    text="SWR ends above CBP and ReDo (best test accuracy per task)",
                    metric="best_test_accuracy",
                ),
            ),
        ),
        Finding(
            "B1",
            "Dead ReLU units and saturated tanh and sigmoid units accumulate over a task stream.",
            "finding-b1",
            tuple(
                Part(
                    "rises",
                    "b1",
                    {a: {"activation": a}},
                    text=f"{a}: frozen units grow",
                    metric="frozen_fraction",
                )
                for a in ("relu", "tanh", "sigmoid")
            ),
        ),
        Finding(
            "B4",
            "Normalization sharply reduces frozen units; dropout and noise injection help further.",
            "finding-b4",
            tuple(
                Part(
                    "below",
                    "b4",
                    {name: {"norm": norm, "dropout": drop, "noise": noise}},
                    {"plain ReLU": {"norm": "none", "dropout": 0.0, "noise": 0.0}},
                    text=f"{name}: fewer frozen units than plain ReLU",
                    metric="frozen_fraction",
                )
                for name, norm, drop, noise in [
                    ("batch norm", "batch", 0.0, 0.0),
                    ("layer norm", "layer", 0.0, 0.0),
                    ("dropout 0.1", "none", 0.1, 0.0),
                    ("noise 0.01", "none", 0.0, 0.01),
                ]
            ),
        ),
        Finding(
            "B5",
            "What helps generalization on one task costs plasticity later.",
            "finding-b5",
            (
                Part(
                    "anticorrelated",
                    ("b1", "b4"),
                    {"all runs": {}},
                    text="held-out accuracy on the first task against online accuracy late",
                    metric="test_accuracy",
                ),
            ),
        ),
        Finding(
            "C1",
            "A warm-started network generalizes worse than a fresh one trained on all the data.",
            "finding-c1",
            (
                Part(
                    "above",
                    "c1",
                    {"fresh": {"start": "fresh"}},
                    {"warm": {"start": "warm"}},
                    text="fresh ends above warm (test accuracy)",
                    metric="final_test_accuracy",
                ),
            ),
        ),
        Finding(
            "C2",
            "Shrink-and-perturb at the switch closes much of the warm-start gap.",
            "finding-c2",
            (
                Part(
                    "above",
                    "c1",
                    {"shrink & perturb": {"start": "shrink_perturb"}},
                    {"warm": {"start": "warm"}},
                    text="shrink-and-perturb (0.4, 0.1) ends above warm (test accuracy)",
                    metric="final_test_accuracy",
                ),
            ),
        ),
        Finding(
            "D1",
            "Online permuted MNIST (one example per step): accuracy decays and dead units grow, faster "
            "with Adam than with SGD; CBP keeps the network learning.",
            "finding-d1",
            (
                Part("declines", "d1", {"SGD": _M["base"]}, text="SGD's accuracy falls"),
                Part(
                    "above", "d1", {"CBP": {"method": "cbp"}}, {"SGD": _M["base"]}, text="CBP ends above SGD"
                ),
                Part("declines", "d1_adam", {"Adam": _M["base"]}, text="Adam's accuracy falls"),
                Part(
                    "above",
                    "d1_adam",
                    {"Adam + CBP": {"method": "cbp"}},
                    {"Adam": _M["base"]},
                    text="Adam + CBP ends above Adam",
                ),
                Part(
                    "above",
                    ("d1", "d1_adam"),
                    {"Adam": {"method": "base", "optimizer": "adamw"}},
                    {"SGD": {"method": "base", "optimizer": "sgdw"}},
                    text="more dead units with Adam than with SGD",
                    metric="dead_fraction",
                ),
            ),
        ),
    ]
}
