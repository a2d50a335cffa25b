"""Online rotations: the part of a rotation that cannot be folded into a weight.

A rotation ``R`` folded into a linear's weight (``W R``) needs its input rotated too
(``x R``); where the producer of that input cannot absorb ``R`` (a nonlinearity sits
between, as before ``down_proj``), the input is rotated at run time by an
:class:`InputRotation` attached to the linear. The attached module is a child named
``input_rotation`` (so its buffers are in the state dict) and is described in the
checkpoint by :meth:`InputRotation.spec`, from which loading rebuilds it.
"""

from typing import Any

import torch
from torch import nn

from lmpress.errors import LmpressError
from lmpress.transforms.hadamard import random_signs, rotate


class InputRotation(nn.Module):
    """``x -> x R`` over the last dimension, ``R = diag(signs) H`` orthonormal
    (``H`` the rotation of :func:`lmpress.transforms.hadamard.rotation_matrix` of order
    ``size``, ``signs`` seeded +-1: QuaRot's randomized Hadamard).

    With ``inner`` (``[size]``), ``x -> ((x R^T) * inner) R``: an elementwise scale in the
    unrotated basis, e.g. a norm's weight that could not be folded because the weight
    after it is shared (a tied output head). With ``dense``, ``R`` is the stored matrix
    ``dense`` (a learned rotation) instead.
    """

    def __init__(self, size: int, seed: int, inner: bool = False, dense: bool = False) -> None:
        super().__init__()
        self.size = size
        self.seed = seed
        self.register_buffer("signs", random_signs(size, seed).to(torch.float32))
        if inner:
            self.register_buffer("inner", torch.ones(size))
        else:
            self.inner = None
        # a learned rotation has no seed to rebuild it from: it is stored whole
        if dense:
            self.register_buffer("dense", torch.eye(size))
        else:
            self.dense = None

    @classmethod
    def from_matrix(cls, r: torch.Tensor, inner: bool = False) -> "InputRotation":
        """The rotation ``x -> x r`` of an orthogonal ``r [n, n]`` (stored float32)."""
        m = cls(r.shape[0], 0, inner=inner, dense=True)
        m.dense.copy_(r.to(torch.float32))
        return m

    def spec(self) -> dict[str, Any]:
        """What the checkpoint records to rebuild this module (its buffers are stored)."""
        kind = "dense" if self.dense is not None else "hadamard"
        return {"kind": kind, "size": self.size, "seed": self.seed, "inner": self.has_inner}

    @property
    def has_inner(self) -> bool:
        return self.inner is not None

    def matrix(self) -> torch.Tensor:
        """``R`` as ``[size, size]`` float64."""
        if self.dense is not None:
            return self.dense.double()
        eye = torch.eye(self.size, dtype=torch.float64)
        return rotate(eye * self.signs.double(), self.size, self.seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dense is not None:
            r = self.dense.to(x.dtype)
            if self.inner is not None:
                x = (x @ r.T) * self.inner.to(x.dtype)
            return x @ r
        s = self.signs.to(x.dtype)
        if self.inner is not None:
            x = rotate(x, self.size, self.seed, transpose=True) * s * self.inner.to(x.dtype)
        return rotate(x * s, self.size, self.seed)

    def extra_repr(self) -> str:
        return f"size={self.size}, seed={self.seed}, inner={self.has_inner}"


def _rotate_input_hook(module: nn.Module, args: tuple) -> tuple:
    return (module.input_rotation(args[0]), *args[1:])


def attach_input_rotation(module: nn.Module, rotation: InputRotation) -> None:
    """Rotate ``module``'s input by ``rotation`` from now on (a ``QLinear`` applies it in
    its forward; any other module through a forward pre-hook)."""
    from lmpress.nn.qlinear import QLinear

    if getattr(module, "input_rotation", None) is not None:
        raise LmpressError(f"{type(module).__name__} already rotates its input")
    module.input_rotation = rotation
    if not isinstance(module, QLinear) and not hasattr(module, "_lmpress_rotation_hook"):
        module._lmpress_rotation_hook = module.register_forward_pre_hook(_rotate_input_hook)


def rotation_from_spec(spec: dict[str, Any], where: str) -> InputRotation:
    """The module :meth:`InputRotation.spec` describes (buffers to be loaded)."""
    try:
        if spec.get("kind") not in ("hadamard", "dense"):
            raise ValueError(f"unknown kind {spec.get('kind')!r}")
        dense = spec["kind"] == "dense"
        return InputRotation(int(spec["size"]), int(spec["seed"]), bool(spec.get("inner")), dense)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise LmpressError(f"{where}: malformed online rotation {spec!r} ({e})") from None


def online_rotations(model: nn.Module) -> dict[str, dict[str, Any]]:
    """``{module name: spec}`` of every attached input rotation."""
    return {
        n: m.input_rotation.spec()
        for n, m in model.named_modules()
        if isinstance(getattr(m, "input_rotation", None), InputRotation)
    }
