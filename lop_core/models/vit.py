"""The vision transformer of the SWR paper's class-incremental CIFAR experiment (reference_code.md §4.1).

A pre-LN ViT: patch embedding (a stride-P convolution), a class token, learned positional
embeddings, ``depth`` encoder blocks ``x <- x + Drop(MHA(LN1(x)))``, ``x <- x + MLP(LN2(x))`` with
``MLP = Drop(fc2(Drop(GELU(fc1(.)))))``, a final layer norm and a linear head on the class token.
The paper's size is patch 4, width 384, 8 blocks, 12 heads, MLP 1536, dropout 0.1 (14.3 M
parameters with 100 classes).

The parameters of the ``depth`` blocks are stacked along a leading block dimension (``fc1_w`` is
[depth, mlp, width], ...). Block k reads slice k; the function is that of ``depth`` separate
blocks. The stacking lets the unit methods (CBP, ReDo) treat the blocks' MLPs as the "runs" of a
population of one-hidden-layer MLPs (``lop_core.vision.methods``), with no copy.

Layer norm is ``regular`` (``LN(x) * g + b``, g = 1 at init, eps 1e-5) or ``reparam``
(``LN(x) * (1 + w) + b``, w = 0 at init, eps 1e-6; §4.2): the same function at init, but weight
decay, noise and "mean" reinitialization pull the effective gain toward 1 instead of 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LAYER_NORMS = ("regular", "reparam")
#: Parameters stacked over the blocks: [depth, ...], block k uses slice k.
BLOCK_PARAMS = (
    "ln1_w",
    "ln1_b",
    "qkv_w",
    "qkv_b",
    "proj_w",
    "proj_b",
    "ln2_w",
    "ln2_b",
    "fc1_w",
    "fc1_b",
    "fc2_w",
    "fc2_b",
)
_LN_EPS = {"regular": 1e-5, "reparam": 1e-6}  # the reference's values (§8 bug 15)


def layer_norm(x: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor, kind: str) -> torch.Tensor:
    """Layer norm over the last dimension: ``LN(x) * g + b`` (regular) or ``LN(x) * (1 + w) + b`` (reparam)."""
    g = gain + 1.0 if kind == "reparam" else gain
    return F.layer_norm(x, (x.shape[-1],), g, bias, eps=_LN_EPS[kind])


class ViT(nn.Module):
    """The reference ViT with stacked block parameters.

    Args:
        num_classes: head outputs (the classes of the whole stream; logits are masked to the
            classes seen so far by the caller).
        image_size, patch: square images of ``image_size`` pixels cut into ``patch`` x ``patch`` patches.
        width, depth, heads, mlp: hidden size, number of blocks, attention heads, MLP hidden units.
        dropout: dropout probability (also attention dropout), 0.1 in the paper.
        layer_norm: ``regular`` or ``reparam``.
        generator: CPU generator for the initial weights (drawn on the CPU, then moved).
        device: where the parameters live.

    Attributes:
        keep_features: when True, a forward pass stores the GELU output of every block's
            MLP in ``features`` (list of [B, tokens, mlp]) for the unit methods.
    """

    def __init__(
        self,
        num_classes: int,
        image_size: int = 32,
        patch: int = 4,
        width: int = 384,
        depth: int = 8,
        heads: int = 12,
        mlp: int = 1536,
        dropout: float = 0.1,
        layer_norm: str = "reparam",
        generator: torch.Generator | None = None,
        device="cpu",
    ):
        super().__init__()
        if layer_norm not in LAYER_NORMS:
            raise ValueError(f"unknown layer norm {layer_norm!r}; choose one of {list(LAYER_NORMS)}")
        if image_size % patch or width % heads:
            raise ValueError("image_size must be a multiple of patch and width a multiple of heads")
        self.width, self.depth, self.heads, self.mlp = width, depth, heads, mlp
        self.patch, self.dropout, self.ln_kind = patch, dropout, layer_norm
        self.tokens = (image_size // patch) ** 2 + 1
        d, w, m = depth, width, mlp

        def param(*shape):
            return nn.Parameter(torch.empty(*shape, device=device))

        self.patch_w, self.patch_b = param(w, 3, patch, patch), param(w)
        self.cls_token, self.pos_embedding = param(1, 1, w), param(1, self.tokens, w)
        self.ln1_w, self.ln1_b = param(d, w), param(d, w)
        self.qkv_w, self.qkv_b = param(d, 3 * w, w), param(d, 3 * w)
        self.proj_w, self.proj_b = param(d, w, w), param(d, w)
        self.ln2_w, self.ln2_b = param(d, w), param(d, w)
        self.fc1_w, self.fc1_b = param(d, m, w), param(d, m)
        self.fc2_w, self.fc2_b = param(d, w, m), param(d, w)
        self.ln_w, self.ln_b = param(w), param(w)
        self.head_w, self.head_b = param(num_classes, w), param(num_classes)
        self.keep_features = False
        self.features: list[torch.Tensor] = []
        self.init_parameters(generator or torch.Generator().manual_seed(0))

    # ---- initialization (reference §4.1 and the SWR table of §2.2) ------------------------------

    def init_table(self) -> dict[str, tuple[str, float, float]]:
        """Initial distribution of every parameter (per block for the stacked ones).

        Returns:
            name -> (kind, a, b): ``("const", value, 0)``, ``("normal", mean, std)``,
            ``("uniform", -bound, bound)`` or ``("trunc_normal", mean, std)`` (truncated at +-2
            absolute, as torch's default; SWR resamples it untruncated, as the reference does).
        """
        w, m = self.width, self.mlp
        gain = 0.0 if self.ln_kind == "reparam" else 1.0
        xavier = math.sqrt(6.0 / (w + 3 * w))  # Xavier-uniform on the full [3w, w] in-projection
        return {
            "patch_w": ("trunc_normal", 0.0, math.sqrt(1.0 / (3 * self.patch * self.patch))),
            "patch_b": ("const", 0.0, 0.0),
            "cls_token": ("const", 0.0, 0.0),
            "pos_embedding": ("normal", 0.0, 0.02),
            "ln1_w": ("const", gain, 0.0),
            "ln1_b": ("const", 0.0, 0.0),
            "qkv_w": ("uniform", -xavier, xavier),
            "qkv_b": ("const", 0.0, 0.0),
            "proj_w": ("uniform", -1 / math.sqrt(w), 1 / math.sqrt(w)),  # Kaiming-uniform, a = sqrt(5)
            "proj_b": ("const", 0.0, 0.0),
            "ln2_w": ("const", gain, 0.0),
            "ln2_b": ("const", 0.0, 0.0),
            "fc1_w": ("uniform", -1 / math.sqrt(w), 1 / math.sqrt(w)),
            "fc1_b": ("uniform", -1 / math.sqrt(w), 1 / math.sqrt(w)),
            "fc2_w": ("uniform", -1 / math.sqrt(m), 1 / math.sqrt(m)),
            "fc2_b": ("uniform", -1 / math.sqrt(m), 1 / math.sqrt(m)),
            "ln_w": ("const", gain, 0.0),
            "ln_b": ("const", 0.0, 0.0),
            "head_w": ("const", 0.0, 0.0),  # zero-initialized head
            "head_b": ("const", 0.0, 0.0),
        }

    @torch.no_grad()
    def init_parameters(self, generator: torch.Generator) -> None:
        """(Re)draw every parameter from ``init_table`` with ``generator`` (also "network resetting")."""
        for name, p in self.named_parameters():
            p.copy_(draw(self.init_table()[name], p.shape, generator))

    # ---- forward --------------------------------------------------------------------------------

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.dropout, self.training)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_classes] of normalized images [B, 3, H, W]."""
        x = F.conv2d(images, self.patch_w, self.patch_b, stride=self.patch)  # [B, w, H/P, W/P]
        x = x.flatten(2).transpose(1, 2)  # [B, patches, w]
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embedding
        x = self._drop(x)  # [B, T, w]
        self.features = []
        b, t, w = x.shape
        for k in range(self.depth):
            h = layer_norm(x, self.ln1_w[k], self.ln1_b[k], self.ln_kind)
            qkv = F.linear(h, self.qkv_w[k], self.qkv_b[k])  # [B, T, 3w]
            q, kk, v = qkv.view(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)  # [B, H, T, w/H]
            a = F.scaled_dot_product_attention(q, kk, v, dropout_p=self.dropout if self.training else 0.0)
            a = a.transpose(1, 2).reshape(b, t, w)  # heads back together: [B, T, w]
            x = x + self._drop(F.linear(a, self.proj_w[k], self.proj_b[k]))
            h = layer_norm(x, self.ln2_w[k], self.ln2_b[k], self.ln_kind)
            u = F.gelu(F.linear(h, self.fc1_w[k], self.fc1_b[k]))  # [B, T, mlp]: the MLP's hidden units
            if self.keep_features:
                self.features.append(u)
            x = x + self._drop(F.linear(self._drop(u), self.fc2_w[k], self.fc2_b[k]))
        x = layer_norm(x, self.ln_w, self.ln_b, self.ln_kind)
        return F.linear(x[:, 0], self.head_w, self.head_b)

    @torch.no_grad()
    def hidden_units(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The MLP hidden units (GELU outputs) of every block, each [B, tokens, mlp], in eval mode."""
        was, keep = self.training, self.keep_features
        self.train(False)
        self.keep_features = True
        try:
            self(images)
            return self.features
        finally:
            self.keep_features, self.features = keep, []
            self.train(was)

    # ---- parameter groups -----------------------------------------------------------------------

    def groups(self) -> dict[str, list[str]]:
        """Parameter names by group, for the weight-magnitude metrics (reference §4.5)."""
        return {
            "attention": ["qkv_w", "proj_w"],
            "mlp": ["fc1_w", "fc2_w"],
            "patch": ["patch_w"],
            "embedding": ["cls_token", "pos_embedding"],
            "head": ["head_w"],
            "ln_gain": ["ln1_w", "ln2_w", "ln_w"],
        }

    def decayed(self, name: str) -> bool:
        """Whether weight decay applies to ``name`` when 1-D parameters are exempt (§4.4).

        The reference's rule is ``dim >= 2`` on unstacked tensors: every weight matrix, the patch
        convolution, the class token and the positional embedding; not biases or layer-norm parameters.
        """
        return (name.endswith("_w") and not name.startswith("ln")) or name in ("cls_token", "pos_embedding")


def draw(dist: tuple[str, float, float], shape, generator: torch.Generator) -> torch.Tensor:
    """Values of one initial distribution (see ``ViT.init_table``), drawn on the CPU."""
    kind, a, b = dist
    out = torch.empty(shape)
    if kind == "const":
        return out.fill_(a)
    if kind == "uniform":
        return out.uniform_(a, b, generator=generator)
    if kind == "normal":
        return out.normal_(a, b, generator=generator)
    return nn.init.trunc_normal_(out, a, b, -2.0, 2.0, generator=generator)
