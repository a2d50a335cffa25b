"""The lean decoder: Llama-style models on lmpress's C kernels with a static KV cache.

transformers' generic forward costs a few thousand small torch operations per
token; on a 135M model that overhead is larger than the matrix products. For
Llama-style blocks (RMSNorm, rotary attention with grouped KV heads, SiLU-gated
MLP: Llama, Mistral, SmolLM, Qwen2, and Qwen3 with its per-head q/k norms)
:class:`Decoder` runs one token as one C call through every block
(:class:`lmpress.kernels.decode_ops.DecodeStep`): fused Q/K/V and gate/up products
straight from packed codes (:class:`~lmpress.runtime.projections.Proj`), RMSNorm,
rotary embedding, attention over a preallocated float32 KV cache, and the residual
adds folded into the products. The prompt is prefilled through the same weights
with torch ops. Which families qualify, and where their modules sit, comes from
the family table (:mod:`lmpress.models.families`).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmpress.errors import LmpressError
from lmpress.kernels import cpu as cpu_kernels
from lmpress.kernels import decode_ops
from lmpress.models.families import FAMILIES, Family, family_of
from lmpress.nn.qlinear import QLinear, refuse_online_parts
from lmpress.runtime.projections import EXACT_HEAD_SCHEME, Proj, exact_int8, is_bfloat16


def runs_family(fam: Family) -> bool:
    """Whether the decoder computes ``fam``'s blocks: RMSNorm, rotate-half rotary tables
    from the model's own rotary module, separate q/k/v, SiLU-gated MLP."""
    return (
        fam.norm == "rmsnorm"
        and fam.rotary == "half"
        and fam.rotary_module is not None
        and fam.split_qkv
        and fam.gated_mlp
        and fam.activation == "silu"
    )


# The model_types the lean decoder runs, in the family table's order.
LEAN_FAMILIES: tuple[str, ...] = tuple(t for t, f in FAMILIES.items() if runs_family(f))


def can_decode(model: nn.Module) -> bool:
    """Whether :class:`Decoder` handles this model here (the rotary tables come from the
    model's own rotary module, so every rope variant it implements is covered)."""
    cfg = getattr(model, "config", None)
    return getattr(cfg, "model_type", None) in LEAN_FAMILIES and decode_ops.available()


def _weight(norm: nn.Module | None) -> torch.Tensor | None:
    """A norm's weight ``[n]`` as contiguous float32 (None for an absent norm)."""
    return None if norm is None else norm.weight.detach().float().contiguous()


@dataclass
class _Layer:
    """One block's weights: norms ``[hidden]``, fused projections, per-head norms ``[hd]``."""

    ln1: torch.Tensor
    ln2: torch.Tensor
    qkv: Proj
    o: Proj
    gu: Proj
    down: Proj
    qn: torch.Tensor | None
    kn: torch.Tensor | None


class Decoder:
    """Greedy or sampled decoding of a Llama-style model through the C kernels.

    :meth:`prefill` runs the prompt and :meth:`step` one token at a time; both return
    the next token's logits ``[vocab]`` float32 and fill the cache, which holds
    ``max_len`` positions (capped by the model's ``max_position_embeddings``).
    """

    def __init__(self, model: nn.Module, max_len: int = 2048, exact_head: bool = True) -> None:
        """``exact_head``: run a float output head that is exactly an 8-bit grid
        (:func:`exact_int8`) from its codes, or one of bfloat16 values from bfloat16
        words; the logits are the same up to summation order."""
        cfg = model.config
        fam = family_of(cfg.model_type)
        if fam is None or not runs_family(fam):
            raise LmpressError(
                f"the lean decoder supports {', '.join(LEAN_FAMILIES)}, not {cfg.model_type!r}"
            )
        if not cpu_kernels.CpuKernel().available():
            raise LmpressError("the lean decoder needs lmpress's C kernels (not built here)")
        refuse_online_parts(model, "the lean decoder")
        self.model = model
        self.n_head = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_head
        self.hidden = cfg.hidden_size
        self.inter = cfg.intermediate_size
        self.eps = float(cfg.rms_norm_eps)
        self.scale = self.hd**-0.5
        self.max_len = min(max_len, cfg.max_position_embeddings)
        self.embed = model.get_submodule(fam.embed).weight.detach().float()
        self.final_norm = _weight(model.get_submodule(fam.final_norm))
        self._init_head(model.get_submodule(fam.head), exact_head)
        self.layers = [self._layer(fam, blk) for blk in model.get_submodule(fam.blocks)]
        pos = torch.arange(self.max_len)[None]
        probe = torch.zeros(1, 1, self.hidden)
        with torch.no_grad():
            cos, sin = model.get_submodule(fam.rotary_module)(probe, pos)
        self.cos = cos[0].float().contiguous()  # [T, hd]
        self.sin = sin[0].float().contiguous()
        self.k = torch.zeros(len(self.layers), self.n_kv, self.max_len, self.hd)
        self.v = torch.zeros_like(self.k)
        self.pos = 0
        # The C step: one call per token through every block, on buffers made once.
        blocks = [
            decode_ops.DecodeBlock(
                attn_norm=L.ln1,
                mlp_norm=L.ln2,
                qkv=L.qkv.decode_linear(),
                attn_out=L.o.decode_linear(),
                gate_up=L.gu.decode_linear(),
                down=L.down.decode_linear(),
                k_cache=self.k[li],
                v_cache=self.v[li],
                q_norm=L.qn,
                k_norm=L.kn,
            )
            for li, L in enumerate(self.layers)
        ]
        dims = decode_ops.DecodeDims(
            self.hidden, self.n_head, self.n_kv, self.hd, self.inter, self.max_len
        )
        self._step = decode_ops.DecodeStep(blocks, dims, self.eps, self.scale)

    def _init_head(self, head: nn.Module, exact_head: bool) -> None:
        """The output head as a projection from codes (``self.head``) or a float weight
        (``self.head_w`` ``[vocab, hidden]``, float32 or bfloat16, on lmpress's GEMV when
        ``self.head_c``)."""
        self.head = Proj([head]) if isinstance(head, QLinear) else None
        self.head_w = None if self.head else head.weight.detach().float().contiguous()
        packed = exact_int8(self.head_w) if exact_head and self.head_w is not None else None
        if packed is not None:
            self.head = Proj([QLinear.from_packed(packed, head.bias)])
            self.head_w = None
        if exact_head and self.head_w is not None and is_bfloat16(self.head_w):
            # half the bytes, the same products: only lmpress's GEMV reads bf16 with float x
            self.head_w, self.head_c = self.head_w.to(torch.bfloat16), True
        else:
            self.head_c = self.head_w is not None and cpu_kernels.dense_gemv_faster(self.head_w)

    def _layer(self, fam: Family, blk: nn.Module) -> _Layer:
        sub = blk.get_submodule
        qn, kn = (sub(n) for n in fam.qk_norms) if fam.qk_norms else (None, None)
        return _Layer(
            ln1=_weight(sub(fam.attn_norm)),
            ln2=_weight(sub(fam.mlp_norm)),
            qkv=Proj([sub(n) for n in fam.qkv]),
            o=Proj([sub(fam.attn_out)]),
            gu=Proj([sub(n) for n in fam.mlp_in]),
            down=Proj([sub(fam.mlp_out)]),
            # Qwen3: an RMSNorm over each head of q and k before the rotary embedding
            qn=_weight(qn),
            kn=_weight(kn),
        )

    @property
    def head_kind(self) -> str:
        """What the output head runs from, in words (for reports)."""
        if self.head_w is not None:
            return str(self.head_w.dtype).removeprefix("torch.")
        if isinstance(self.model.lm_head, QLinear):
            return f"quantized ({self.model.lm_head.scheme.name})"
        return f"8-bit codes of its exact grid ({EXACT_HEAD_SCHEME}, ggml's Q8_0)"

    def _head_norm(self, z: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        """RMSNorm of each head of ``z [t, heads, hd]`` with ``w [hd]`` (identity if None)."""
        return z if w is None else decode_ops.rmsnorm(z.contiguous(), w, self.eps)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """``x [t, hidden]`` float32 -> logits ``[t, vocab]`` float32."""
        h = decode_ops.rmsnorm(x, self.final_norm, self.eps)
        if self.head is not None:
            return self.head(h)
        if self.head_c and h.shape[0] == 1:
            return cpu_kernels.dense_gemv(h, self.head_w)
        return F.linear(h, self.head_w.float())

    @torch.no_grad()
    def prefill(self, ids: list[int]) -> torch.Tensor:
        """Run the prompt from position 0, fill the cache; the last token's logits ``[vocab]``."""
        t = len(ids)
        if t == 0:
            raise LmpressError("the prompt is empty")
        if t >= self.max_len:
            raise LmpressError(f"the prompt has {t} tokens; the decoder holds {self.max_len}")
        x = self.embed[torch.tensor(ids)].contiguous()
        cos, sin = self.cos[:t], self.sin[:t]
        rot = (self.hd // 2, self.hd - self.hd // 2)

        def rope(z: torch.Tensor) -> torch.Tensor:
            a, b = z.split(rot, -1)
            return z * cos + torch.cat([-b, a], -1) * sin

        h = torch.empty_like(x)
        for li, L in enumerate(self.layers):
            decode_ops.rmsnorm(x, L.ln1, self.eps, out=h)
            qkv = L.qkv(h)
            q, k, v = qkv.split(
                [self.n_head * self.hd, self.n_kv * self.hd, self.n_kv * self.hd], -1
            )
            q = self._head_norm(q.reshape(t, self.n_head, self.hd), L.qn).transpose(0, 1)
            k = self._head_norm(k.reshape(t, self.n_kv, self.hd), L.kn).transpose(0, 1)
            v = v.reshape(t, self.n_kv, self.hd).transpose(0, 1)
            q, k = rope(q), rope(k)
            self.k[li, :, :t] = k
            self.v[li, :, :t] = v
            att = F.scaled_dot_product_attention(
                q[None], k[None], v[None], is_causal=True, enable_gqa=self.n_head != self.n_kv
            )[0]
            x = L.o(att.transpose(0, 1).reshape(t, -1), x)
            decode_ops.rmsnorm(x, L.ln2, self.eps, out=h)
            gu = L.gu(h)
            a = F.silu(gu[:, : self.inter]) * gu[:, self.inter :]
            x = L.down(a.contiguous(), x)
        self.pos = t
        return self._logits(x[-1:].contiguous())[0]

    @torch.no_grad()
    def step(self, token: int) -> torch.Tensor:
        """One token at the next position; its logits ``[vocab]``."""
        if self.pos >= self.max_len:
            raise LmpressError(f"the decoder's cache is full ({self.max_len} positions)")
        p = self.pos
        x = self.embed[token].clone()
        self._step(x, p, self.cos[p], self.sin[p])
        self.pos = p + 1
        return self._logits(x[None])[0]
