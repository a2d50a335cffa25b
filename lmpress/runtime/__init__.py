"""Running lmpress models: the lean decoder on the C kernels and text generation.

- :mod:`lmpress.runtime.projections`: fused projections (:class:`Proj`) and the exact
  forms of a float output head;
- :mod:`lmpress.runtime.decoder`: :class:`Decoder`, Llama-style blocks with a static
  KV cache, for the families in :data:`LEAN_FAMILIES`;
- :mod:`lmpress.runtime.generation`: sampling, the token loop and :func:`generate`.
"""

from lmpress.runtime.decoder import LEAN_FAMILIES, Decoder, can_decode, runs_family
from lmpress.runtime.generation import GenerationResult, generate, generate_ids, sample
from lmpress.runtime.projections import EXACT_HEAD_SCHEME, Proj, exact_int8, is_bfloat16

__all__ = [
    "EXACT_HEAD_SCHEME",
    "LEAN_FAMILIES",
    "Decoder",
    "GenerationResult",
    "Proj",
    "can_decode",
    "exact_int8",
    "generate",
    "generate_ids",
    "is_bfloat16",
    "runs_family",
    "sample",
]
