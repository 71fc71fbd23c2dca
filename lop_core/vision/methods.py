"""The plasticity methods on the ViT: adapters that show the ViT to the population methods.

The methods of ``lop_core.methods`` act on a population of R runs whose parameters are [R, ...]
tensors, with an optimizer that can forget the state of chosen entries. Two views of one ViT fit
that mould without copying anything:

* ``TensorViews`` (SWR, shrink-and-perturb): a population of one whose parameter tensors are the
  ViT's, one per block for the stacked block parameters, so SWR picks its threshold per tensor as
  the reference does (§2.1): every weight matrix, bias, layer-norm parameter, the class token,
  the positional embedding and the head separately.
* ``BlockUnits`` (CBP, ReDo): the MLPs of the ``depth`` blocks as a population of ``depth``
  one-hidden-layer MLPs: "run" k is block k, its units the ``mlp`` GELU units between ``fc1`` and
  ``fc2`` (reference §3.5), its features the GELU outputs of every token of the batch (so means
  run over batch and tokens). Attention is never touched.

Reinitialized entries are drawn from the ViT's own initial distributions (``ViT.init_table``):
uniform ones as uniform, the patch convolution's truncated normal as a plain normal (as the
reference's SWR table does). A replaced unit's incoming weights come from ``fc1``'s init
U(+-1/sqrt(width)); the reference draws U(+-sqrt(3/width)), sqrt(3) wider (§8 bug 7). Its bias is
set to 0 (as in the reference, though ``fc1``'s biases start uniform) and its outgoing weights to 0.
"""

from __future__ import annotations

import torch

from lop_core.data import seeded_generator
from lop_core.methods import CBP, SWR, Method, ReDo, ShrinkPerturb
from lop_core.models.vit import BLOCK_PARAMS, ViT


class _Optimizer:
    """What the methods need of an optimizer: ``params`` and ``reset_state`` on torch SGD's momentum.

    Args:
        params: the tensors the method sees, in its order.
        sources: for each, (ViT parameter, block index or None) whose momentum it is.
        sgd: the ``torch.optim.SGD`` training the ViT.
    """

    def __init__(self, params, sources, sgd: torch.optim.Optimizer):
        self.params, self.sources, self.sgd = params, sources, sgd

    def reset_state(self, index: int, mask: torch.Tensor, what: str = "moments") -> None:
        """Zero the momentum of the entries ``mask`` of parameter ``index`` (``none``: keep it)."""
        if what == "none":
            return
        p, block = self.sources[index]
        buf = self.sgd.state.get(p, {}).get("momentum_buffer")
        if buf is None:  # no step yet
            return
        target = buf[block] if block is not None else buf
        target.masked_fill_(mask.reshape(target.shape), 0.0)


class _Model:
    """A stand-in population model: ``parameter_groups()`` plus whatever attributes a method reads.

    ``features`` (what the unit methods read) is computed on access by the ``features`` callable.
    """

    def __init__(self, groups, features=None, **attributes):
        self._groups, self._features = groups, features
        self.__dict__.update(attributes)

    def parameter_groups(self):
        return self._groups

    @property
    def features(self) -> list[torch.Tensor]:
        return self._features()


class _ViTDistributions:
    """``init_dist`` / ``draw_init`` from the ViT's initial distributions (one per method parameter)."""

    dists: list[tuple[str, float, float]]

    def init_dist(self, index: int) -> tuple[float, float]:
        """(mean, spread) of parameter ``index``'s initial distribution; spread 0: a constant."""
        kind, a, b = self.dists[index]
        if kind == "const":
            return a, 0.0
        return ((a + b) / 2, (b - a) / 2) if kind == "uniform" else (a, b)

    def draw_init(self, run: int, index: int, count: int) -> torch.Tensor:
        kind, a, b = self.dists[index]
        if kind == "uniform":
            return torch.empty(count).uniform_(a, b, generator=self.generators[run])
        return self.draw_normal(run, (count,), a, b)  # normal; truncated normal resampled untruncated


class TensorViews(_ViTDistributions):
    """Mixin: the ViT as a population of one, one parameter per tensor (per block when stacked)."""

    def __init__(self, vit: ViT, sgd, cfg, generators):
        table = vit.init_table()
        self.sources, self.dists, groups = [], [], []
        for name, p in vit.named_parameters():
            for block in range(p.shape[0]) if name in BLOCK_PARAMS else [None]:
                view = (p.detach()[block] if block is not None else p.detach()).unsqueeze(0)  # [1, ...]
                groups.append((name, view))
                self.sources.append((p, block))
                self.dists.append(table[name])
        views = [v for _, v in groups]
        super().__init__(_Model(groups), _Optimizer(views, self.sources, sgd), [cfg], generators)

    def gradient(self, index: int) -> torch.Tensor | None:
        p, block = self.sources[index]
        if p.grad is None:
            return None
        return (p.grad[block] if block is not None else p.grad).unsqueeze(0)


class BlockUnits(_ViTDistributions):
    """Mixin: the blocks' MLPs as a population of ``depth`` one-hidden-layer MLPs (see the module doc)."""

    def __init__(self, vit: ViT, sgd, cfg, generators):
        names = ("fc1_w", "fc2_w", "fc1_b", "fc2_b")  # the order of ("weight", 0), ("weight", 1), ...
        params = [getattr(vit, n) for n in names]
        table = vit.init_table()
        self.vit, self.dists = vit, [table[n] for n in names]
        groups = [("weight", params[0]), ("weight", params[1]), ("bias", params[2]), ("bias", params[3])]
        model = _Model(
            groups,
            features=lambda: [self.block_features()],
            depth=1,
            width=vit.mlp,
            layer_norm=False,
            weights=params[:2],
            biases=params[2:],
        )
        optimizer = _Optimizer(params, [(p, None) for p in params], sgd)
        super().__init__(model, optimizer, [cfg] * vit.depth, generators)

    def block_features(self) -> torch.Tensor:
        """GELU outputs of the last training batch, [depth, batch x tokens, mlp] (float32)."""
        return torch.stack(self.vit.features).flatten(1, 2).float()


class ViTSWR(TensorViews, SWR):
    """SWR (``lop_core.methods.swr``) on every tensor of the ViT."""


class ViTShrinkPerturb(TensorViews, ShrinkPerturb):
    """Shrink-and-perturb on the ViT: the shrink is the weight decay, the perturbation N(0, sigma^2) noise."""


class ViTCBP(BlockUnits, CBP):
    """CBP (``lop_core.methods.cbp``) on the units of every block's MLP."""


class ViTReDo(BlockUnits, ReDo):
    """ReDo (``lop_core.methods.redo``) on the units of every block's MLP."""


class ViTReset(Method):
    """Network resetting (reference §4.6): a freshly drawn ViT and an empty optimizer at every task but the first.

    It runs after the best-validation weights were restored and the classes extended, so every
    task trains a new network on all the classes seen so far: the upper baseline.
    """

    name = "reset"

    def __init__(self, vit: ViT, sgd, cfg, generators):
        super().__init__(None, None, [cfg], generators)
        self.vit, self.sgd = vit, sgd

    @torch.no_grad()
    def on_task_start(self, task: int) -> dict[str, torch.Tensor] | None:
        if task == 0:
            return None
        self.vit.init_parameters(self.generators[0])
        if self.shared_arg("state_reset") != "none":
            self.sgd.state.clear()  # the optimizer of a new network: no momentum yet
        total = sum(p.numel() for p in self.vit.parameters())
        return {"reset_weights": torch.tensor([float(total)], device=self.vit.head_w.device)}


_ADAPTERS = {
    "base": Method,
    "reset": ViTReset,
    "swr": ViTSWR,
    "shrink_perturb": ViTShrinkPerturb,
    "cbp": ViTCBP,
    "redo": ViTReDo,
}


def make_method(cfg, vit: ViT, sgd) -> Method:
    """The method of run ``cfg`` on ``vit``, with the run's own generators (one per block for units)."""
    cls = _ADAPTERS[cfg.method]
    if cls is Method:
        return Method(None, None, [cfg], [seeded_generator(cfg.seed, stream=2)])
    if issubclass(cls, BlockUnits):
        generators = [seeded_generator(cfg.seed, stream=100 + k) for k in range(vit.depth)]
    else:
        generators = [seeded_generator(cfg.seed, stream=2)]
    return cls(vit, sgd, cfg, generators)
