"""Block transforms applied before quantization: each transform file registers one in
``TRANSFORMS``; ``hadamard`` holds the rotations (any size) that rotation transforms use."""

from lmpress.transforms import awq  # noqa: F401  (registration)
from lmpress.transforms.base import TRANSFORMS, TransformSpec, get_transform

__all__ = ["TRANSFORMS", "TransformSpec", "get_transform"]
