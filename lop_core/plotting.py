"""One look for every figure: the seaborn theme and a fixed colour per method."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg") if matplotlib.get_backend().lower().startswith("tk") else None
import seaborn as sns  # noqa: E402

#: Fixed method -> colour map, the same in every chapter (colour-blind safe palette).
METHOD_ORDER = ["base", "l2", "shrink_perturb", "l2_init", "cbp", "redo", "swr", "reset"]
_COLOURS = sns.color_palette("colorblind", 10)
# SWR takes the palette's red, far from CBP's purple, since the two are compared most
PALETTE = dict(zip(METHOD_ORDER, [_COLOURS[i] for i in (0, 1, 2, 6, 4, 5, 3, 7)], strict=True))
#: Readable names for legends.
LABELS = {
    "base": "SGD (base)",
    "l2": "L2",
    "shrink_perturb": "Shrink & perturb",
    "l2_init": "L2-init",
    "cbp": "CBP",
    "redo": "ReDo",
    "swr": "SWR",
    "reset": "Full reset",
}


def set_theme() -> None:
    """The book's seaborn theme."""
    sns.set_theme(
        context="notebook",
        style="whitegrid",
        font_scale=0.95,
        rc={
            "figure.figsize": (7.0, 3.6),
            "figure.dpi": 110,
            "axes.spines.top": False,
            "axes.spines.right": False,
        },
    )


def method_palette(methods) -> dict:
    """The fixed colours of ``methods`` (unknown methods get grey)."""
    return {m: PALETTE.get(m, (0.5, 0.5, 0.5)) for m in methods}
