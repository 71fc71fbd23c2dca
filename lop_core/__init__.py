"""lop_core: loss of plasticity, reproduced. A compact library behind the book.

Modules: ``config`` (presets, validation), ``data`` (MNIST, task streams), ``models``
(population MLP), ``optim`` (SGDW, AdamW), ``methods`` (plasticity methods), ``metrics``
(plasticity correlates), ``train`` (the population loop), ``runs`` (the run store),
``plotting`` (theme, palette), ``cli`` (``python -m lop_core``).
"""

__version__ = "0.1.0"
