"""Model families as data: where a family's modules sit and what its blocks compute.

One row per Hugging Face ``model_type``. The architecture check
(:mod:`lmpress.models.arch`), the lean decoder (:mod:`lmpress.runtime.decoder`) and
the GGUF exporter (:mod:`lmpress.export.gguf`) read this table instead of keeping
their own lists, so that adding a family is adding one row.

Module paths are ``get_submodule`` paths: :attr:`Family.blocks`, :attr:`Family.embed`,
:attr:`Family.final_norm`, :attr:`Family.head` and :attr:`Family.rotary_module` from the
model (``AutoModelForCausalLM``), every other path from one decoder block.
"""

from dataclasses import dataclass
from typing import Literal

from torch import nn

NormKind = Literal["rmsnorm", "layernorm"]
# "half": rotary embedding on the two halves of each head (transformers' rotate_half);
# "learned": absolute position embeddings added to the token embeddings, no rotary.
RotaryStyle = Literal["half", "learned"]


@dataclass(frozen=True)
class Family:
    """The block layout of one model family (see the module docstring for the paths)."""

    model_type: str
    blocks: str  # the nn.ModuleList of decoder blocks
    embed: str  # token embedding [vocab, hidden]
    final_norm: str  # the norm ahead of the output head
    attn_norm: str  # the norm ahead of attention, in a block
    mlp_norm: str  # the norm ahead of the MLP, in a block
    qkv: tuple[str, ...]  # q, k, v projections (three), or one fused projection
    attn_out: str  # attention's output projection
    mlp_in: tuple[str, ...]  # gate and up (a gated MLP), or the single input projection
    mlp_out: str  # the MLP's output projection
    norm: NormKind
    activation: str  # the config's hidden_act / activation_function ("silu", "gelu_new", ...)
    rotary: RotaryStyle
    head: str = "lm_head"
    rotary_module: str | None = None  # the model's rotary-embedding module (cos/sin tables)
    positions: str | None = None  # the learned position embedding, for rotary "learned"
    qk_norms: tuple[str, str] | None = None  # per-head RMSNorms of q and k (Qwen3)
    ties_head: bool = False  # the config's default for tie_word_embeddings
    # llama.cpp's architecture for the GGUF exporter (None: the exporter does not write
    # this family); gguf-py's own tensor-name map for it names every tensor.
    gguf_arch: str | None = None
    # Whether llama.cpp's architecture rotates interleaved pairs, so that the Q and K rows
    # of transformers' half-split layout must be permuted on export.
    gguf_permute_qk: bool = False

    @property
    def gated_mlp(self) -> bool:
        """Whether the MLP is ``act(gate(x)) * up(x)`` (two input projections)."""
        return len(self.mlp_in) == 2

    @property
    def split_qkv(self) -> bool:
        """Whether q, k and v are three linears (not one fused one)."""
        return len(self.qkv) == 3

    @property
    def linears(self) -> tuple[str, ...]:
        """Every linear of one block, in the order the block applies them."""
        return (*self.qkv, self.attn_out, *self.mlp_in, self.mlp_out)


def _llama_like(
    model_type: str, gguf_arch: str, permute: bool, qk_norms: tuple[str, str] | None = None
) -> Family:
    """A Llama-style row: pre-norm RMSNorm blocks, rotary attention, SiLU-gated MLP."""
    return Family(
        model_type=model_type,
        blocks="model.layers",
        embed="model.embed_tokens",
        final_norm="model.norm",
        attn_norm="input_layernorm",
        mlp_norm="post_attention_layernorm",
        qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
        attn_out="self_attn.o_proj",
        mlp_in=("mlp.gate_proj", "mlp.up_proj"),
        mlp_out="mlp.down_proj",
        norm="rmsnorm",
        activation="silu",
        rotary="half",
        rotary_module="model.rotary_emb",
        gguf_arch=gguf_arch,
        gguf_permute_qk=permute,
        qk_norms=qk_norms,
    )


# The families the tests exercise (tests/conftest.py ``tiny_config``); others are
# quantized generically (lmpress.models.arch) and generate through transformers.
FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (
        _llama_like("llama", "llama", permute=True),
        # llama.cpp runs Mistral (without sliding windows) as its llama architecture
        _llama_like("mistral", "llama", permute=True),
        # llama.cpp's qwen2/qwen3 rotate the two halves, as transformers does
        _llama_like("qwen2", "qwen2", permute=False),
        _llama_like(
            "qwen3",
            "qwen3",
            permute=False,
            qk_norms=("self_attn.q_norm", "self_attn.k_norm"),
        ),
        Family(
            model_type="gpt2",
            blocks="transformer.h",
            embed="transformer.wte",
            final_norm="transformer.ln_f",
            attn_norm="ln_1",
            mlp_norm="ln_2",
            qkv=("attn.c_attn",),  # a Conv1D holding q, k and v
            attn_out="attn.c_proj",
            mlp_in=("mlp.c_fc",),
            mlp_out="mlp.c_proj",
            norm="layernorm",
            activation="gelu_new",
            rotary="learned",
            positions="transformer.wpe",
            ties_head=True,
        ),
        Family(
            model_type="opt",
            blocks="model.decoder.layers",
            embed="model.decoder.embed_tokens",
            final_norm="model.decoder.final_layer_norm",
            attn_norm="self_attn_layer_norm",
            mlp_norm="final_layer_norm",
            qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
            attn_out="self_attn.out_proj",
            mlp_in=("fc1",),
            mlp_out="fc2",
            norm="layernorm",
            activation="relu",
            rotary="learned",
            positions="model.decoder.embed_positions",
            ties_head=True,
        ),
    )
}

# model_types that are not decoder-only language models: refused with a clear message
# (encoder-decoder configs are also caught by their is_encoder_decoder flag).
NOT_DECODER_ONLY = ("t5", "bart", "mbart", "bert", "roberta", "whisper", "marian", "pegasus")


def family_of(model_type: str | None) -> Family | None:
    """The table's row for ``model_type``, or None for a family it does not describe."""
    return FAMILIES.get(model_type) if model_type is not None else None


def model_family(model: nn.Module) -> Family | None:
    """The row for a loaded model (by its ``config.model_type``), or None."""
    return family_of(getattr(getattr(model, "config", None), "model_type", None))
