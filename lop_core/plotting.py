"""One look for every figure: the seaborn theme and a fixed colour per method."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg") if matplotlib.get_backend().lower().startswith("tk") else None
import seaborn as sns  # noqa: E402

#: Fixed method -> colour map, the same in every chapter (colour-blind safe palette).
METHOD_ORDER = [
    "base",
    "l2",
    "shrink_perturb",
    "l2_init",
    "cbp",
    "redo",
    "swr",
    "reset",
    "weight_clipping",
    "optimizer_reset",
    "parseval",
    "spectral",
    "nap",
]
_COLOURS = sns.color_palette("colorblind", 10)
# SWR takes the palette's red, far from CBP's purple, since the two are compared most
_DARK = sns.color_palette("dark", 10)
PALETTE = dict(
    zip(
        METHOD_ORDER,
        [_COLOURS[i] for i in (0, 1, 2, 6, 4, 5, 3, 7, 8, 9)] + [_DARK[2], _DARK[4], _DARK[0]],
        strict=True,
    )
)
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
    "weight_clipping": "Weight clipping",
    "optimizer_reset": "Optimizer reset",
    "parseval": "Parseval",
    "spectral": "Spectral reg.",
    "nap": "NaP",
}


#: Readable names of the activations (legends).
ACTIVATIONS = {
    "relu": "ReLU",
    "leaky_relu": "leaky ReLU",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "gelu": "GELU",
    "silu": "SiLU",
    "crelu": "CReLU",
}

#: Fixed colours of the other things the book's figures tell apart (activations, optimizers,
#: settings, systems), so that a colour means one thing in every chapter. Plain SGD / ReLU / the
#: warm start without a remedy take SGD's blue; CBP systems CBP's purple.
_C = _COLOURS
NAMED = {
    # optimizers and systems (chapters on optimizers and on online permuted MNIST)
    "SGD": PALETTE["base"],
    "SGD + CBP": PALETTE["cbp"],
    "SGD, momentum 0.9": _C[9],
    "Adam": _C[8],
    "Adam + CBP": _C[6],
    # activations (ReLU is the default network: SGD's blue)
    "ReLU": PALETTE["base"],
    "leaky ReLU": _C[1],
    "tanh": _C[2],
    "sigmoid": _C[3],
    "GELU": _C[4],
    "SiLU": _C[5],
    "CReLU": _C[6],
    "ReLU + skip": _C[7],
    # continual MNIST settings (ReLU variants) and warm starting
    "ReLU + batch norm": _C[9],
    "ReLU + layer norm": _C[8],
    "ReLU + dropout 0.1": _C[5],
    "ReLU + noise 0.01": _C[7],
    "fresh": PALETTE["reset"],
    "warm": PALETTE["base"],
    "shrink & perturb (λ=0.4, σ=0.1)": PALETTE["shrink_perturb"],
    "perturb σ = 0": PALETTE["base"],  # the warm start
    "perturb σ = 0.1": PALETTE["shrink_perturb"],
}


def colours(labels) -> dict:
    """A colour for every label: the method's (``PALETTE``, by name or readable label), else its
    fixed colour (``NAMED``), else the palette's colours not yet taken, in order."""
    by_label = {LABELS[m]: c for m, c in PALETTE.items()}
    out = {}
    for label in labels:
        out[label] = PALETTE.get(label) or by_label.get(label) or NAMED.get(label)
    spare = [c for c in [*_COLOURS, *sns.color_palette("dark", 10)] if c not in out.values()]
    for label in [lab for lab, c in out.items() if c is None]:
        out[label] = spare.pop(0) if spare else (0.5, 0.5, 0.5)
    return out


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
