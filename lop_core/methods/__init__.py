"""Plasticity methods, one per file, behind one interface (``base.Method``).

``base`` (plain training), ``l2`` (decoupled weight decay), ``shrink_perturb``, ``l2_init``,
``cbp`` (continual backpropagation), ``redo`` (recycling dormant units), ``swr`` (selective
weight reinitialization), ``reset`` (a fresh network at every task), ``weight_clipping``
(Elsayed et al. 2024), ``optimizer_reset`` (the optimizer's state forgotten at every task
boundary, Asadi et al. 2023), ``parseval`` (Parseval regularization, Chung et al. 2024) and
``spectral`` (spectral regularization, Lewandowski et al. 2025) and ``nap`` (normalize-and-project,
Lyle et al. 2024).
"""

from __future__ import annotations

from typing import Any

from lop_core.methods.base import Method
from lop_core.methods.cbp import CBP
from lop_core.methods.l2 import L2
from lop_core.methods.l2_init import L2Init
from lop_core.methods.nap import NaP
from lop_core.methods.optimizer_reset import OptimizerReset
from lop_core.methods.parseval import Parseval
from lop_core.methods.redo import ReDo
from lop_core.methods.reset import Reset
from lop_core.methods.shrink_perturb import ShrinkPerturb
from lop_core.methods.spectral import Spectral
from lop_core.methods.swr import SWR
from lop_core.methods.weight_clipping import WeightClipping

METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (
        Method,
        L2,
        ShrinkPerturb,
        L2Init,
        CBP,
        ReDo,
        SWR,
        Reset,
        WeightClipping,
        OptimizerReset,
        Parseval,
        Spectral,
        NaP,
    )
}


def method_defaults(name: str) -> dict[str, Any]:
    """A fresh copy of the default hyperparameters of method ``name``."""
    return dict(METHODS[name].defaults)


__all__ = ["METHODS", "Method", "method_defaults"]
