"""Text generation on lmpress's kernels: a lean decoder with a static KV cache.

transformers' generic forward costs a few thousand small torch operations per
token; on a 135M model that overhead is larger than the matrix products. For
Llama-style blocks (RMSNorm, rotary attention with grouped KV heads, SiLU-gated
MLP: Llama, Mistral, SmolLM, Qwen2, and Qwen3 with its per-head q/k norms)
:class:`Decoder` runs one token as about ten C calls per block: fused Q/K/V and
gate/up products straight from packed codes (rows of modules with one scheme are
concatenated), RMSNorm, rotary embedding,
attention over a preallocated float32 KV cache, and the residual adds folded into
the products. The prompt is prefilled through the same weights with torch ops.
Other architectures (or a model without the C kernels) generate through
transformers' ``generate()``, which works on any lmpress model as well.
"""

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lmpress.errors import LmpressError
from lmpress.formats.scheme import parse_scheme
from lmpress.kernels import cpu as cpu_kernels
from lmpress.methods.rtn import rtn
from lmpress.nn.qlinear import QLinear
from lmpress.packing.packed import PackedWeight, concat_rows

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")


@dataclass
class GenerationResult:
    ids: list[int]  # new tokens only
    text: str
    prompt_tokens: int
    prefill_s: float
    decode_s: float
    engine: str
    per_token_s: list[float] = field(default_factory=list)

    @property
    def decode_tokens_per_s(self) -> float:
        n = max(len(self.ids) - 1, 0)  # the first new token comes from the prefill
        return n / self.decode_s if self.decode_s > 0 else 0.0


# ggml's Q8_0 grid: 8-bit symmetric codes in groups of 32 with fp16 scales.
EXACT_HEAD_SCHEME = "w8g32s"


def exact_int8(w: torch.Tensor) -> PackedWeight | None:
    """``w [N, K]`` float32 as 8-bit symmetric codes in groups of 32 with fp16 scales, when
    those reproduce it bit for bit, else ``None``.

    A head or embedding that a GGUF stored as Q8_0 (the default model's is) comes back
    from dequantization as exactly such a grid: its amax is ``127 d``, so round to
    nearest finds ``d`` and every code again. Decoding then reads 8.5 bits per weight of
    the head instead of 32 and computes the same logits up to float summation order.
    """
    scheme = parse_scheme(EXACT_HEAD_SCHEME)

    def pack(rows: torch.Tensor) -> PackedWeight | None:
        res = rtn(rows, scheme)
        packed = PackedWeight.from_codes(res.codes, res.scale, res.zero, scheme)
        return packed if torch.equal(packed.dequantize(), rows) else None

    # A few rows first: most float heads are not such a grid, and the whole check of a
    # large head costs seconds and a few copies of it in memory.
    if w.shape[0] > 64 and pack(w[:64]) is None:
        return None
    return pack(w)


def is_bfloat16(w: torch.Tensor) -> bool:
    """Whether float32 ``w`` holds bfloat16 values only (a bf16 checkpoint's weight)."""
    return torch.equal(w.to(torch.bfloat16).float(), w)


class Proj:
    """Several linear layers reading one input, as one product (rows concatenated).

    ``__call__(x [M, K], residual=None) -> [M, sum(out)]`` float32; for one row the
    residual (``[sum(out)]``) is added inside the C kernel, as if it were the bias.
    """

    def __init__(self, mods: list[nn.Module]) -> None:
        self.out = sum(m.out_features for m in mods)
        biases = [m.bias for m in mods]
        self.bias = (
            None
            if all(b is None for b in biases)
            else torch.cat(
                [
                    (b if b is not None else torch.zeros(m.out_features)).detach().float()
                    for b, m in zip(biases, mods, strict=True)
                ]
            )
        )
        schemes = {m.scheme for m in mods if isinstance(m, QLinear)}
        self.state = None
        self.weight = None
        s0 = next(iter(schemes)) if len(schemes) == 1 else None
        if all(isinstance(m, QLinear) for m in mods) and s0 and s0.granularity != "tensor":
            self.state = cpu_kernels.CpuKernel().prepare(concat_rows([m.packed() for m in mods]))
        else:
            ws = [
                m.dequantized_weight() if isinstance(m, QLinear) else m.weight.detach().float()
                for m in mods
            ]
            self.weight = torch.cat(ws).contiguous()

    def capsule(self):  # noqa: ANN201
        """This projection as a C object for ``decode_step`` (holds pointers into self)."""
        c = cpu_kernels._cpu
        if self.bias is not None:
            self.bias = self.bias.float().contiguous()
        b = 0 if self.bias is None else self.bias.data_ptr()
        st = self.state
        if st is not None and st.gemv_path is None:
            cpu_kernels.cpu_gemm(torch.zeros(1, st.in_features), st, None)  # decide the path
        if st is not None and st.lut is not None:
            lt = st.lut
            return c.lut_linear(
                b, lt.codes.data_ptr(), lt.scales.data_ptr(), lt.zeros.data_ptr(),
                lt.n, lt.k, lt.k8, lt.group_len, lt.groups, lt.bits,
            )  # fmt: skip
        if st is not None:
            return c.packed_linear(*st.args(0, 0, 0, b))
        return c.dense_linear(self.weight.data_ptr(), self.out, self.weight.shape[1], b)

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.state is not None and x.shape[0] <= cpu_kernels.GEMM_MAX_ROWS:
            if residual is not None and x.shape[0] == 1:
                b = residual if self.bias is None else residual + self.bias
                return cpu_kernels.cpu_gemm(x, self.state, b.reshape(-1).contiguous())
            y = cpu_kernels.cpu_gemm(x, self.state, self.bias)
        elif self.state is not None:
            y = F.linear(x, cpu_kernels.cpu_dequantize(self.state), self.bias)
        else:
            y = F.linear(x, self.weight, self.bias)
        return y if residual is None else y + residual


def _norm_weight(norm: nn.Module | None) -> torch.Tensor | None:
    return None if norm is None else norm.weight.detach().float().contiguous()


class Decoder:
    """Greedy or sampled decoding of a Llama-style model through the C kernels."""

    def __init__(self, model: nn.Module, max_len: int = 2048, exact_head: bool = True) -> None:
        """``exact_head``: run a float output head that is exactly an 8-bit grid
        (:func:`exact_int8`) from its codes, or one of bfloat16 values from bfloat16
        words; the logits are the same up to summation order."""
        cfg = model.config
        if cfg.model_type not in SUPPORTED:
            raise LmpressError(
                f"the lean decoder supports {', '.join(SUPPORTED)}, not {cfg.model_type!r}"
            )
        if not cpu_kernels.CpuKernel().available():
            raise LmpressError("the lean decoder needs lmpress's C kernels (not built here)")
        self.model = model
        self.n_head = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_head
        self.hidden = cfg.hidden_size
        self.inter = cfg.intermediate_size
        self.eps = float(cfg.rms_norm_eps)
        self.scale = self.hd**-0.5
        self.max_len = min(max_len, cfg.max_position_embeddings)
        inner = model.model
        self.embed = inner.embed_tokens.weight.detach().float()
        self.final_norm = inner.norm.weight.detach().float().contiguous()
        head = model.lm_head
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
        self.layers = []
        for blk in inner.layers:
            a, m = blk.self_attn, blk.mlp
            self.layers.append(
                {
                    "ln1": blk.input_layernorm.weight.detach().float().contiguous(),
                    "ln2": blk.post_attention_layernorm.weight.detach().float().contiguous(),
                    "qkv": Proj([a.q_proj, a.k_proj, a.v_proj]),
                    "o": Proj([a.o_proj]),
                    "gu": Proj([m.gate_proj, m.up_proj]),
                    "down": Proj([m.down_proj]),
                    # Qwen3: an RMSNorm over each head of q and k before the rotary embedding
                    "qn": _norm_weight(getattr(a, "q_norm", None)),
                    "kn": _norm_weight(getattr(a, "k_norm", None)),
                }
            )
        pos = torch.arange(self.max_len)[None]
        probe = torch.zeros(1, 1, self.hidden)
        with torch.no_grad():
            cos, sin = inner.rotary_emb(probe, pos)
        self.cos = cos[0].float().contiguous()  # [T, hd]
        self.sin = sin[0].float().contiguous()
        n_layers = len(self.layers)
        self.k = torch.zeros(n_layers, self.n_kv, self.max_len, self.hd)
        self.v = torch.zeros_like(self.k)
        self.pos = 0
        # The C step: one call per token through every block, on buffers made once.
        self.blocks = tuple(
            (
                L["ln1"].data_ptr(),
                L["ln2"].data_ptr(),
                L["qkv"].capsule(),
                L["o"].capsule(),
                L["gu"].capsule(),
                L["down"].capsule(),
                self.k[li].data_ptr(),
                self.v[li].data_ptr(),
                0 if L["qn"] is None else L["qn"].data_ptr(),
                0 if L["kn"] is None else L["kn"].data_ptr(),
            )
            for li, L in enumerate(self.layers)
        )
        qkv_out = self.layers[0]["qkv"].out if self.layers else 0
        self.scratch = [
            torch.empty(self.hidden),
            torch.empty(qkv_out),
            torch.empty(self.n_head * self.hd),
            torch.empty(2 * self.inter),
            torch.empty(self.inter),
        ]
        self.dims = (self.hidden, self.n_head, self.n_kv, self.hd, self.inter, self.max_len)

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
        if w is None:
            return z
        out = torch.empty(z.shape)
        zc = z.contiguous()
        cpu_kernels._cpu.rmsnorm(
            zc.data_ptr(), w.data_ptr(), out.data_ptr(), z.shape[0] * z.shape[1], self.hd, self.eps
        )
        return out

    def _norm(self, x: torch.Tensor, w: torch.Tensor, out: torch.Tensor) -> None:
        cpu_kernels._cpu.rmsnorm(
            x.data_ptr(), w.data_ptr(), out.data_ptr(), x.shape[0], self.hidden, self.eps
        )

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.empty_like(x)
        cpu_kernels._cpu.rmsnorm(
            x.data_ptr(),
            self.final_norm.data_ptr(),
            h.data_ptr(),
            x.shape[0],
            self.hidden,
            self.eps,
        )
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
        for li, L in enumerate(self.layers):
            h = torch.empty_like(x)
            cpu_kernels._cpu.rmsnorm(
                x.data_ptr(), L["ln1"].data_ptr(), h.data_ptr(), t, self.hidden, self.eps
            )
            qkv = L["qkv"](h)
            q, k, v = qkv.split(
                [self.n_head * self.hd, self.n_kv * self.hd, self.n_kv * self.hd], -1
            )
            q = self._head_norm(q.reshape(t, self.n_head, self.hd), L["qn"]).transpose(0, 1)
            k = self._head_norm(k.reshape(t, self.n_kv, self.hd), L["kn"]).transpose(0, 1)
            v = v.reshape(t, self.n_kv, self.hd).transpose(0, 1)

            def rope(z: torch.Tensor) -> torch.Tensor:
                a, b = z.split(rot, -1)
                return z * cos + torch.cat([-b, a], -1) * sin

            q, k = rope(q), rope(k)
            self.k[li, :, :t] = k
            self.v[li, :, :t] = v
            att = F.scaled_dot_product_attention(
                q[None], k[None], v[None], is_causal=True, enable_gqa=self.n_head != self.n_kv
            )[0]
            x = L["o"](att.transpose(0, 1).reshape(t, -1), x)
            cpu_kernels._cpu.rmsnorm(
                x.data_ptr(), L["ln2"].data_ptr(), h.data_ptr(), t, self.hidden, self.eps
            )
            gu = L["gu"](h)
            a = F.silu(gu[:, : self.inter]) * gu[:, self.inter :]
            x = L["down"](a.contiguous(), x)
        self.pos = t
        return self._logits(x[-1:].contiguous())[0]

    @torch.no_grad()
    def step(self, token: int) -> torch.Tensor:
        """One token at the next position; its logits ``[vocab]``."""
        if self.pos >= self.max_len:
            raise LmpressError(f"the decoder's cache is full ({self.max_len} positions)")
        p = self.pos
        x = self.embed[token].clone()
        cpu_kernels._cpu.decode_step(
            self.blocks,
            x.data_ptr(),
            p,
            self.cos[p].data_ptr(),
            self.sin[p].data_ptr(),
            tuple(t.data_ptr() for t in self.scratch),
            self.dims,
            self.eps,
            self.scale,
            torch.get_num_threads(),
        )
        self.pos = p + 1
        return self._logits(x[None])[0]


def sample(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, gen) -> int:
    """Greedy at temperature 0, else softmax sampling with optional top-k / top-p."""
    if temperature <= 0:
        return int(logits.argmax())
    z = logits.float() / temperature
    if top_k > 0:
        kth = torch.topk(z, min(top_k, z.numel())).values[-1]
        z = torch.where(z < kth, torch.full_like(z, -float("inf")), z)
    probs = torch.softmax(z, -1)
    if 0 < top_p < 1:
        sp, si = torch.sort(probs, descending=True)
        keep = sp.cumsum(0) - sp < top_p
        probs = torch.zeros_like(probs).scatter(0, si[keep], sp[keep])
        probs = probs / probs.sum()
    return int(torch.multinomial(probs, 1, generator=gen))


def generate_ids(
    model: nn.Module,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    eos: "set[int] | None" = None,
    engine: str = "auto",
    on_token: Callable[[int], None] | None = None,
) -> tuple[list[int], float, float, str, list[float]]:
    """New token ids, prefill seconds, decode seconds, engine used, per-token seconds."""
    gen = torch.Generator().manual_seed(seed)
    eos = eos or set()
    if engine == "auto":
        engine = "lmpress" if can_decode(model) else "transformers"
    if engine == "lmpress":
        dec = Decoder(model, max_len=len(prompt_ids) + max_new_tokens + 1)
        t0 = time.perf_counter()
        logits = dec.prefill(prompt_ids)
        prefill = time.perf_counter() - t0
        step = dec.step
    elif engine == "transformers":
        kw = _cache_keyword(model)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model(torch.tensor([prompt_ids]), use_cache=True)
        prefill = time.perf_counter() - t0
        state = {"cache": getattr(out, kw)}
        logits = out.logits[0, -1]

        def step(tok: int) -> torch.Tensor:
            with torch.no_grad():
                o = model(torch.tensor([[tok]]), use_cache=True, **{kw: state["cache"]})
            state["cache"] = getattr(o, kw)
            return o.logits[0, -1]

    else:
        raise LmpressError(f"unknown engine {engine!r}; use auto, lmpress or transformers")
    steps = _loop(step, logits, max_new_tokens, temperature, top_k, top_p, gen, eos, on_token)
    ids, times = [], []
    for tok, dt in steps:
        ids.append(tok)
        times.append(dt)
    return ids, prefill, sum(times), engine, times


def _cache_keyword(model: nn.Module) -> str:
    """transformers 5.2x calls the KV cache ``cache``; earlier versions ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _loop(
    step, logits, n, temperature, top_k, top_p, gen, eos, on_token
) -> Iterator[tuple[int, float]]:
    """Yield ``(token, seconds spent computing the logits that follow it)``."""
    for i in range(n):
        tok = sample(logits, temperature, top_k, top_p, gen)
        if on_token is not None:
            on_token(tok)
        if tok in eos or i == n - 1:
            yield tok, 0.0
            return
        t0 = time.perf_counter()
        logits = step(tok)
        yield tok, time.perf_counter() - t0


def can_decode(model: nn.Module) -> bool:
    """Whether :class:`Decoder` handles this model here (the rotary tables come from the
    model's own rotary module, so every rope variant it implements is covered)."""
    cfg = getattr(model, "config", None)
    return getattr(cfg, "model_type", None) in SUPPORTED and cpu_kernels._cpu is not None


def generate(
    model: "str | nn.Module",
    prompt: str,
    max_new_tokens: int = 64,
    tokenizer=None,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    engine: str = "auto",
    stop_at_eos: bool = True,
    on_text: Callable[[str], None] | None = None,
) -> GenerationResult:
    """Generate text from ``prompt`` with a loaded lmpress model or a checkpoint path.

    ``engine``: ``lmpress`` (the lean decoder on the C kernels), ``transformers``
    (the model's own forward with its KV cache), or ``auto`` (the first when it
    handles the model). Greedy at ``temperature`` 0.
    """
    if isinstance(model, str):
        from lmpress.models.load import load_model

        loaded = load_model(model)
        model, tokenizer = loaded.model, loaded.tokenizer
    if tokenizer is None:
        raise LmpressError("generation needs the model's tokenizer")
    if max_new_tokens <= 0:
        raise LmpressError("max_new_tokens must be a positive integer")
    prompt_ids = tokenizer(prompt).input_ids
    if not prompt_ids:
        raise LmpressError("the prompt is empty; give some text with --prompt")
    eos = set()
    if stop_at_eos and tokenizer.eos_token_id is not None:
        eos = {int(tokenizer.eos_token_id)}
    printed = [""]

    def stream(_tok: int, ids: list[int] = []) -> None:  # noqa: B006 - the running output
        ids.append(_tok)
        if on_text is not None:
            text = tokenizer.decode(ids, skip_special_tokens=True)
            on_text(text[len(printed[0]) :])
            printed[0] = text

    ids, prefill, decode, used, times = generate_ids(
        model, prompt_ids, max_new_tokens, temperature, top_k, top_p, seed, eos, engine, stream
    )
    return GenerationResult(
        ids=ids,
        text=tokenizer.decode(ids, skip_special_tokens=True),
        prompt_tokens=len(prompt_ids),
        prefill_s=prefill,
        decode_s=decode,
        engine=used,
        per_token_s=times,
    )
