"""Plasticity methods, one per file, behind one interface (``base.Method``)."""

from __future__ import annotations

from typing import Any

from lop_core.methods.base import Method

METHODS: dict[str, type[Method]] = {"base": Method}


def method_defaults(name: str) -> dict[str, Any]:
    """A fresh copy of the default hyperparameters of method ``name``."""
    return dict(METHODS[name].defaults)


__all__ = ["METHODS", "Method", "method_defaults"]
