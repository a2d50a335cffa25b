"""Export to GGUF, the file format of llama.cpp.

Each quantized module is mapped onto the ggml block type that holds its grid
exactly, where one does (ggml blocks are 32 weights with one scale, fp16 but for
MXFP4's E8M0 byte):

- symmetric, 2-4 bits -> Q4_0, ``d * (c - 8)`` with ``d = s``, ``c = q - mid + 8``: exact;
- asymmetric, 2-4 bits (integer or float zeros) -> Q4_1, ``d * c + m`` with ``d = s``,
  ``m = -z * s``: exact up to the fp16 rounding of ``m``;
- 5-7 bits, or 8 bits symmetric -> Q8_0, ``d * c`` with ``d = s``, ``c = q - z`` (fits
  int8): exact;
- 8 bits asymmetric -> Q8_0 with ``d = s`` in every block where ``|q - z| <= 127``,
  re-quantized in the others;
- ``mxfp4`` -> MXFP4: the E8M0 byte and the E2M1 codes as they are. ggml's table is
  E2M1 doubled (0, 1, 2, 3, 4, 6, 8, 12, ...) under a halved scale ``2**(e - 128)``,
  a power-of-two rescaling of both factors, so every product is the same float: exact
  (lmpress's -0 decodes as +0);
- ``iq4nl`` (fp16 scales, or bf16 ones fp16 holds exactly) -> IQ4_NL: ``d = s``, the
  codes index the same ``kvalues_iq4nl`` table: exact.

Grid formats with no such type (``nf4``, ``fp4``, ``nvfp4``, ``lut``, ``nupes``,
``mix``, FP8, ``mxfp6``, ``mxfp8``) are re-quantized from their dequantized weights into
``grid_fallback_type``: by default IQ4_NL, ggml's non-uniform 4-bit type, for codes of
at most 4 bits, Q8_0 for wider ones; the summary reports each module's error.

A group length that is a multiple of 32 covers whole ggml blocks, so a group's
scale and zero repeat over its blocks (a partial last group of 64 in a 576-wide
row is two blocks). Other groupings (e.g. 48) are re-quantized from the
dequantized weight into ``fallback_type`` and reported with their error. Nibbles
are stored ggml's way: value ``j`` of a block in the low nibble of byte ``j``, value
``j + 16`` in its high nibble (lmpress packs consecutive codes into one byte). Q/K
projections of Llama-family models are row-permuted to ggml's rotary layout,
which moves whole rows and their parameters and so changes no value.

The tokenizer is copied from the source GGUF when the model came from one (the
default model does), else built from the Hugging Face ``tokenizer.json``
(byte-level BPE tokenizers).
"""

import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from lmpress.errors import LmpressError
from lmpress.export.base import ExportOption, exportable_modules, register_exporter
from lmpress.formats import FORMATS, parse_scheme
from lmpress.models.families import FAMILIES, Family
from lmpress.packing.packed import PackedWeight

QK = 32  # weights per ggml block for Q4_0, Q4_1, Q8_0, IQ4_NL, MXFP4
Q = gguf.GGMLQuantizationType
FLOAT_TYPES = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}
FALLBACK_TYPES = {"q8_0": Q.Q8_0, "q4_1": Q.Q4_1, "q4_0": Q.Q4_0, "f16": Q.F16}
# targets for grid formats that map onto no ggml type; "auto" picks by code width
GRID_FALLBACK_TYPES = {"auto": None, "iq4_nl": Q.IQ4_NL, "mxfp4": Q.MXFP4, **FALLBACK_TYPES}
# the lmpress scheme whose codes and scales re-quantization into IQ4_NL chooses (gguf-py
# has no IQ4_NL quantizer); it maps onto IQ4_NL exactly
IQ4_NL_SCHEME = "iq4nlg32"
# model_type -> the family rows this exporter writes (a llama.cpp architecture named in
# the family table); what each family needs (architecture, Q/K permutation) is read there.
ARCHS: dict[str, Family] = {t: f for t, f in FAMILIES.items() if f.gguf_arch is not None}


def rotary_row_order(rows: int, n_head: int) -> torch.Tensor:
    """Row order that takes HF's half-split rotary layout to ggml's interleaved one.

    Returns int64 ``[rows]``: new row ``i`` is old row ``order[i]`` (the permutation
    llama.cpp's converter applies to Q and K of Llama models).
    """
    idx = torch.arange(rows)
    return idx.reshape(n_head, 2, rows // n_head // 2).transpose(1, 2).reshape(rows)


def blocks_fit(packed: PackedWeight) -> bool:
    """Whether every 32-weight ggml block lies inside one lmpress group."""
    s = packed.scheme
    k = packed.in_features
    return k % QK == 0 and (s.granularity != "group" or s.group_size % QK == 0)


def _block_params(p: torch.Tensor, packed: PackedWeight, rows: int) -> torch.Tensor:
    """Per-group ``[P, G]`` parameters repeated to one per 32-block: ``[rows, K/32]``."""
    k = packed.in_features
    glen = packed.scheme.group_len(k)
    per_block = p.float().repeat_interleave(glen // QK, dim=1)[:, : k // QK]
    return per_block.expand(rows, -1) if per_block.shape[0] == 1 else per_block


def _nibbles(c: np.ndarray) -> np.ndarray:
    """``[R, B, 32]`` 4-bit values -> ``[R, B, 16]`` bytes, ggml order (j | j+16 << 4)."""
    return (c[..., :16] | (c[..., 16:] << 4)).astype(np.uint8)


def _f16_bytes(x: torch.Tensor) -> np.ndarray:
    """``[R, B]`` float -> ``[R, B, 2]`` little-endian fp16 bytes."""
    return x.to(torch.float16).numpy().view(np.uint8).reshape(*x.shape, 2)


def _encode_mxfp4(packed: PackedWeight, order: torch.Tensor | None) -> np.ndarray:
    """An ``mxfp4`` weight ``[N, K]`` as MXFP4 blocks, uint8 ``[N, K/32 * 17]``: per block
    the E8M0 byte (lmpress's ``scales`` byte as it is) then 16 bytes of E2M1 codes.

    lmpress's E2M1 code order (sign bit 3, then the magnitudes 0, 0.5, ... 6) is ggml's
    ``kvalues_mxfp4`` order; ggml's values are twice E2M1 and its scale half of
    ``2**(e - 127)``, so the codes and bytes carry over unchanged.
    """
    n, k = packed.out_features, packed.in_features
    codes, e = packed.codes(), packed.scales
    if order is not None:
        codes, e = codes[order], e[order]
    nb = k // QK
    body = [e.reshape(n, nb, 1).numpy(), _nibbles(codes.reshape(n, nb, QK).numpy())]
    return np.concatenate(body, axis=-1).reshape(n, -1)


def _encode_iq4_nl(packed: PackedWeight, order: torch.Tensor | None) -> np.ndarray | None:
    """An ``iq4nl`` weight ``[N, K]`` as IQ4_NL blocks, uint8 ``[N, K/32 * 18]`` (fp16
    ``d`` = lmpress's scale, then 16 bytes of codes); None where a (bf16) scale has no
    exact fp16 value."""
    n, k = packed.out_features, packed.in_features
    scale = _block_params(packed.scales, packed, n)
    if not torch.equal(scale.to(torch.float16).float(), scale):
        return None
    codes = packed.codes()
    if order is not None:
        codes, scale = codes[order], scale[order]
    body = [_f16_bytes(scale), _nibbles(codes.reshape(n, k // QK, QK).numpy())]
    return np.concatenate(body, axis=-1).reshape(n, -1)


def encode_exact(packed: PackedWeight, order: torch.Tensor | None) -> tuple[Q, np.ndarray] | None:
    """The packed weight as ggml blocks on its own grid, or None where no type holds it.

    Returns ``(type, bytes [N, K/32 * block_bytes] uint8)``; rows reordered by ``order``.
    """
    s = packed.scheme
    n, k = packed.out_features, packed.in_features
    if not blocks_fit(packed):
        return None
    if s.format == "mx":
        return (Q.MXFP4, _encode_mxfp4(packed, order)) if (s.bits, s.variant) == (4, "") else None
    if s.format == "iq4nl":
        data = _encode_iq4_nl(packed, order)
        return None if data is None else (Q.IQ4_NL, data)
    if s.format != "int":
        return None  # the other grid formats' tables are no ggml type's
    codes = packed.codes().to(torch.int32)
    scale = _block_params(packed.scales, packed, n)
    zero = _block_params(packed.zeros(), packed, n)
    if order is not None:
        codes, scale, zero = codes[order], scale[order], zero[order]
    nb = k // QK
    cb = codes.reshape(n, nb, QK)
    if s.bits <= 4 and s.symmetric:
        c = (cb - zero.to(torch.int32)[..., None] + 8).numpy()
        body = [_f16_bytes(scale), _nibbles(c)]
        qtype = Q.Q4_0
    elif s.bits <= 4:
        m = -zero * scale
        body = [_f16_bytes(scale), _f16_bytes(m), _nibbles(cb.numpy())]
        qtype = Q.Q4_1
    elif not s.float_zero:
        c = cb - zero.to(torch.int32)[..., None]
        if bool((c < -128).any() or (c > 127).any()):
            return None  # 8-bit asymmetric: re-quantized block-wise by the caller
        body = [_f16_bytes(scale), c.to(torch.int8).numpy().view(np.uint8)]
        qtype = Q.Q8_0
    else:
        return None
    return qtype, np.concatenate(body, axis=-1).reshape(n, -1)


def encode_q8_0_partial(packed: PackedWeight, order: torch.Tensor | None) -> np.ndarray | None:
    """8-bit asymmetric in Q8_0: exact blocks where ``|q - z| <= 127``, re-quantized elsewhere."""
    s = packed.scheme
    n, k = packed.out_features, packed.in_features
    if s.format != "int" or s.bits != 8 or s.float_zero or not blocks_fit(packed):
        return None
    codes = packed.codes().to(torch.int32)
    scale = _block_params(packed.scales, packed, n)
    zero = _block_params(packed.zeros(), packed, n)
    w = packed.dequantize()
    if order is not None:
        codes, scale, zero, w = codes[order], scale[order], zero[order], w[order]
    nb = k // QK
    c = codes.reshape(n, nb, QK) - zero.to(torch.int32)[..., None]
    fits = (c >= -128).all(-1) & (c <= 127).all(-1)
    requant = gguf.quants.quantize(w.numpy(), Q.Q8_0).reshape(n, nb, 34)
    exact = np.concatenate(
        [_f16_bytes(scale), c.clamp(-128, 127).to(torch.int8).numpy().view(np.uint8)], axis=-1
    )
    out = np.where(fits.numpy()[..., None], exact, requant)
    return out.reshape(n, -1)


def grid_fallback(packed: PackedWeight, choice: str) -> Q:
    """The type a grid-format weight that maps onto no ggml type is re-quantized into:
    ``choice`` (a key of :data:`GRID_FALLBACK_TYPES`); ``"auto"``: IQ4_NL for codes of
    at most 4 bits (the same size, and non-uniform like the source), else Q8_0."""
    qtype = GRID_FALLBACK_TYPES[choice]
    if qtype is not None:
        return qtype
    return Q.IQ4_NL if packed.scheme.bits <= 4 else Q.Q8_0


def requantize(w: torch.Tensor, qtype: Q) -> np.ndarray:
    """``w [N, K]`` float32 re-quantized into ``qtype``: uint8 blocks ``[N, K/32 *
    block_bytes]`` (float16 ``[N, K]`` for F16).

    IQ4_NL goes through lmpress's ``iq4nlg32`` format (its signed-scale range search),
    whose weight then maps onto IQ4_NL exactly; the other types use gguf-py's quantizers.
    """
    n, k = w.shape
    if qtype != Q.F16 and k % QK:
        raise LmpressError(
            f"rows of {k} weights do not fill ggml's {QK}-weight {qtype.name} blocks"
        )
    if qtype != Q.IQ4_NL:
        return gguf.quants.quantize(w.numpy(), qtype)
    scheme = parse_scheme(IQ4_NL_SCHEME)
    fmt = scheme.fmt
    params = fmt.choose_params(w, search=True)
    codes = fmt.encode(w, fmt.expand(params, k, n))
    data = _encode_iq4_nl(PackedWeight.from_codes(codes, params, scheme), None)
    assert data is not None  # fp16 scales: always exact
    return data


def _tokenizer_from_gguf(writer: gguf.GGUFWriter, src: Path) -> None:
    reader = gguf.GGUFReader(str(src))
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY and len(field.types) > 1 else None
        writer.add_key_value(key, field.contents(), vtype, sub_type=sub)


def _tokenizer_from_hf(writer: gguf.GGUFWriter, tokenizer, tok_dir: Path, n_vocab: int) -> None:
    tj = tok_dir / "tokenizer.json"
    if not tj.is_file():
        raise LmpressError(f"{tok_dir} has no tokenizer.json; GGUF export needs it")
    spec = json.loads(tj.read_text())
    if spec.get("model", {}).get("type") != "BPE":
        raise LmpressError(
            "GGUF export supports byte-level BPE tokenizers (Llama 3, Qwen2, SmolLM, GPT-2); "
            f"this one is {spec.get('model', {}).get('type')!r}"
        )
    vocab = tokenizer.get_vocab()
    added = {t["id"]: t for t in spec.get("added_tokens", [])}
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    types = [gguf.TokenType.UNUSED] * n_vocab
    for tok, i in vocab.items():
        if i < n_vocab:
            tokens[i] = tok
            a = added.get(i)
            types[i] = (
                gguf.TokenType.NORMAL
                if a is None
                else gguf.TokenType.CONTROL
                if a.get("special")
                else gguf.TokenType.USER_DEFINED
            )
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(tok_dir, load_merges=True, n_vocab=n_vocab).add_to_gguf(writer, quiet=True)


def _float_tensor(t: torch.Tensor, qtype: Q) -> tuple[np.ndarray, Q | None]:
    a = t.detach().float().contiguous().numpy()
    if t.dim() == 1 or qtype == Q.F32:
        return a, None
    if qtype == Q.F16:
        return a.astype(np.float16), None
    if qtype == Q.Q8_0 and a.shape[-1] % QK:
        return a.astype(np.float16), None
    return gguf.quants.quantize(a, qtype), qtype


def export_gguf(model: nn.Module, tokenizer, out: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Write ``model`` as one GGUF file at ``out``; returns the per-tensor summary."""
    cfg = model.config
    mt = cfg.model_type
    if mt not in ARCHS:
        raise LmpressError(
            f"GGUF export supports {', '.join(sorted(ARCHS))} models; this one is {mt!r}"
        )
    rope = dict(getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {})
    if rope.get("rope_type", "default") != "default":
        raise LmpressError(
            f"GGUF export of rope type {rope.get('rope_type')!r} is not supported yet "
            "(only plain rotary embeddings)"
        )
    rope_theta = float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))
    fam = ARCHS[mt]
    arch, permute = fam.gguf_arch, fam.gguf_permute_qk
    q_name, k_name = fam.qkv[:2]  # block-relative paths of Q and K, whose rows are permuted
    embed_type = FLOAT_TYPES[options["embed_type"]]  # validated against the declaration below
    fallback = FALLBACK_TYPES[options["fallback_type"]]
    grid_choice = options["grid_fallback_type"]
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    n_layers = cfg.num_hidden_layers
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], n_layers)

    writer = gguf.GGUFWriter(str(out), arch)
    qc = getattr(cfg, "quantization_config", None)
    qc = qc if isinstance(qc, dict) else {}  # a GGUF-loaded float model carries a GgufConfig
    writer.add_name(
        Path(str(qc.get("source_model") or options.get("source_model") or "model")).stem
    )
    writer.add_string("general.quantized_by", "lmpress")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_freq_base(rope_theta)
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_rope_dimension_count(head_dim)
    # Qwen3's heads need not split the hidden size (0.6B: 16 x 128 over 1024)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    src = Path(str(qc.get("source_model") or options.get("source_model") or ""))
    if src.suffix == ".gguf" and src.is_file():
        _tokenizer_from_gguf(writer, src)
        tok_source = str(src)
    else:
        tok_dir = Path(options.get("tokenizer_dir", ""))
        _tokenizer_from_hf(writer, tokenizer, tok_dir, cfg.vocab_size)
        tok_source = str(tok_dir / "tokenizer.json")

    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    tensors: dict[str, dict[str, Any]] = {}
    type_counts: dict[str, int] = {}
    # integers and every grid format: those without a ggml type are re-quantized below
    formats = ("int", *(n for n in FORMATS.names() if FORMATS.get(n).provides("grid")))
    items = exportable_modules(model, "GGUF", formats)
    floats = [
        (n, p)
        for n, p in model.state_dict().items()
        if not any(n.startswith(q + ".") for q, _ in items)
        and not (tied and n == "lm_head.weight")
        and "rotary_emb" not in n
    ]
    for name, m in tqdm(items, desc="GGUF tensors", disable=not options.get("progress", True)):
        gname = name_map.get_name(name + ".weight", try_suffixes=(".weight",))
        if gname is None:
            raise LmpressError(f"no GGUF name for module {name}")
        packed = m.packed()
        order = None
        if permute and name.endswith((q_name, k_name)):
            order = rotary_row_order(packed.out_features, n_head if name.endswith(q_name) else n_kv)
        enc = encode_exact(packed, order)
        w = packed.dequantize()
        if order is not None:
            w = w[order]
        if enc is not None:
            qtype, data = enc
            how = "exact grid"
        else:
            data = encode_q8_0_partial(packed, order)
            if data is not None:
                qtype, how = Q.Q8_0, "exact where |q-z|<=127, re-quantized elsewhere"
            else:
                grid = packed.scheme.format != "int"
                qtype = grid_fallback(packed, grid_choice) if grid else fallback
                how = "re-quantized"
                data = requantize(w, qtype)
        back = torch.from_numpy(gguf.quants.dequantize(data, qtype).reshape(w.shape).copy())
        err = (back - w).abs().max().item()
        rel = ((back - w).norm() / w.norm().clamp(min=1e-30)).item()
        writer.add_tensor(gname, data, raw_dtype=qtype)
        tensors[gname] = {
            "module": name,
            "scheme": packed.scheme.name,
            "type": qtype.name,
            "mapping": how,
            "max_abs_error": err,
            "rel_error": rel,
        }
        type_counts[qtype.name] = type_counts.get(qtype.name, 0) + 1
        if m.bias is not None:
            bname = gname.removesuffix(".weight") + ".bias"
            b = m.bias.detach().float()
            writer.add_tensor(bname, (b[order] if order is not None else b).numpy())
    for name, t in floats:
        gname = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
        if gname is None:
            raise LmpressError(f"no GGUF name for tensor {name}")
        qtype = embed_type if "embed" in name or name.startswith("lm_head") else Q.F32
        if permute and name.endswith((f"{q_name}.weight", f"{k_name}.weight")):
            heads = n_head if name.endswith(f"{q_name}.weight") else n_kv
            t = t[rotary_row_order(t.shape[0], heads)]
        data, raw = _float_tensor(t, qtype)
        writer.add_tensor(gname, data, raw_dtype=raw)
        if raw is not None:
            back = gguf.quants.dequantize(data, raw).reshape(t.shape)
            err = float(np.abs(back - t.float().numpy()).max())
        else:
            err = float(np.abs(data.astype(np.float32) - t.float().numpy()).max())
        tname = raw.name if raw is not None else ("F16" if data.dtype == np.float16 else "F32")
        tensors[gname] = {"module": name, "type": tname, "max_abs_error": err}
    writer.add_file_type(_file_type(type_counts))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()
    exact = [t for t in tensors.values() if t.get("mapping") == "exact grid"]
    return {
        "format": "gguf",
        "architecture": arch,
        "tokenizer_from": tok_source,
        "tensor_types": type_counts,
        "quantized_modules": len(items),
        "exact_grid_modules": len(exact),
        "max_abs_error_quantized": max(
            (t["max_abs_error"] for t in tensors.values() if "mapping" in t), default=0.0
        ),
        "tensors": tensors,
    }


def _file_type(counts: dict[str, int]) -> int:
    """llama.cpp's ``general.file_type`` for the most common quantized type."""
    F = gguf.LlamaFileType
    ftypes = {
        "Q4_0": F.MOSTLY_Q4_0,
        "Q4_1": F.MOSTLY_Q4_1,
        "Q8_0": F.MOSTLY_Q8_0,
        "IQ4_NL": F.MOSTLY_IQ4_NL,
        # llama.cpp's only MXFP4 file type (named for gpt-oss's MoE experts); informational
        "MXFP4": F.MOSTLY_MXFP4_MOE,
        "F16": F.MOSTLY_F16,
        "F32": F.ALL_F32,
    }
    if not counts:
        return 0
    return int(ftypes.get(max(counts, key=counts.get), F.ALL_F32))


register_exporter(
    "gguf",
    "one GGUF file for llama.cpp",
    suffix=".gguf",
    magic=b"GGUF",
    embed_type=ExportOption(
        "q8_0", "type of the token embedding and the output head", tuple(FLOAT_TYPES)
    ),
    fallback_type=ExportOption(
        "q8_0",
        "type for integer modules whose grouping no ggml type holds (re-quantized)",
        tuple(FALLBACK_TYPES),
    ),
    grid_fallback_type=ExportOption(
        "auto",
        "type for grid-format modules (nf4, fp4, nvfp4, fp8, lut, ...) that map onto no "
        "ggml type (re-quantized); auto: iq4_nl for 4-bit codes, q8_0 for wider",
        tuple(GRID_FALLBACK_TYPES),
    ),
)(export_gguf)
