"""Generic discovery of decoder blocks and their linear layers.

Quantization needs no per-family layout: the decoder blocks are the largest
``nn.ModuleList`` of the model, and the order in which a block's linears consume
their inputs is recorded by running the block once (see ``lmpress.pipeline``), so
families outside :data:`lmpress.models.families.FAMILIES` are tried too. That
table names the families the tests exercise and those that are refused.
"""

from dataclasses import dataclass

from torch import nn
from transformers import PretrainedConfig
from transformers.pytorch_utils import Conv1D

from lmpress.errors import LmpressError
from lmpress.models.families import FAMILIES, NOT_DECODER_ONLY

# Families exercised by the tests (the family table's rows); others are tried generically.
KNOWN_FAMILIES = tuple(FAMILIES)


def is_linear(m: nn.Module) -> bool:
    return isinstance(m, (nn.Linear, Conv1D))


def linear_weight(m: nn.Module):
    """Weight of a linear layer as ``[out, in]`` (GPT-2's Conv1D stores ``[in, out]``)."""
    return m.weight.t() if isinstance(m, Conv1D) else m.weight


def arch_name(model: nn.Module) -> str:
    """The name errors use for a model's architecture (its ``model_type``, else its class)."""
    return getattr(getattr(model, "config", None), "model_type", type(model).__name__)


def check_supported(config: PretrainedConfig) -> None:
    mt = getattr(config, "model_type", "?")
    if getattr(config, "is_encoder_decoder", False) or mt in NOT_DECODER_ONLY:
        raise LmpressError(
            f"architecture {mt!r} is not a decoder-only language model; lmpress "
            f"handles decoder-only families such as {', '.join(KNOWN_FAMILIES)}"
        )


@dataclass
class BlockLayout:
    """Where the decoder blocks are, and which linears each holds (names relative to the block)."""

    blocks_path: str
    blocks: nn.ModuleList
    linear_names: list[list[str]]

    def full_name(self, block: int, name: str) -> str:
        return f"{self.blocks_path}.{block}.{name}"


def find_layout(model: nn.Module) -> BlockLayout:
    """Find the decoder blocks: the ``nn.ModuleList`` holding the most parameters."""
    best: tuple[int, str, nn.ModuleList] | None = None
    for name, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) > 0:
            n = sum(p.numel() for p in m.parameters())
            if best is None or n > best[0]:
                best = (n, name, m)
    arch = arch_name(model)
    if best is None:
        raise LmpressError(f"architecture {arch!r}: no decoder blocks found; it is not supported")
    _, path, blocks = best
    names = [[n for n, m in b.named_modules() if is_linear(m)] for b in blocks]
    if not any(names):
        raise LmpressError(f"architecture {arch!r}: decoder blocks hold no linear layers")
    return BlockLayout(path, blocks, names)
