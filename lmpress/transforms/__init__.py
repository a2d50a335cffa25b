"""Transforms applied before quantization: each transform file registers one in
``TRANSFORMS`` (``awq`` and ``smoothquant`` per block; ``quarot`` registers the
model-wide ``hadamard``, ``spinquant`` its learned variant);
:mod:`lmpress.transforms.hadamard` builds the rotations (any size) that rotation
transforms use, :mod:`lmpress.transforms.rotation` the parts applied online."""

from lmpress.transforms import awq, quarot, smoothquant, spinquant  # noqa: F401  (registration)
from lmpress.transforms.base import TRANSFORMS, TransformSpec, get_transform

__all__ = ["TRANSFORMS", "TransformSpec", "get_transform"]
