"""Orthogonal rotations of any size: Hadamard matrices built as Kronecker products.

Rotating the residual stream or a linear's input by an orthogonal ``R`` (``x R`` and
``W R``, so that ``(x R)(W R)^T = x W^T``) spreads outlier channels over all of them,
which is what makes low-bit activations usable (QuaRot, Ashkboos et al. 2024; SpinQuant,
Liu et al. 2024). A Hadamard matrix (entries +-1, ``H H^T = n I``) is the rotation of
choice: it spreads every channel evenly and applies in ``O(n log n)``-like time through
its Kronecker factors. One exists only for ``n`` = 1, 2 or a multiple of 4; here:

- Sylvester's construction for powers of two;
- Paley's constructions I (order ``q + 1``, ``q`` a prime ``= 3 mod 4``) and II (order
  ``2 (q + 1)``, ``q = 1 mod 4``), e.g. 12, 20, 24, 28, 44, 60;
- Kronecker products of those: ``576 = 12 * 12 * 4`` (the default model's hidden size),
  ``1536 = 12 * 128``, ``960 = 12 * 20 * 4``.

Where no product of those orders gives ``n`` (``n`` not a multiple of 4, or an odd part
no Paley order covers), the leftover factor is a seeded random orthogonal block: still a
rotation, only less even than a Hadamard one (:func:`rotation_factors` says which).
"""

from dataclasses import dataclass
from functools import cache

import torch

# the largest non-power-of-two Paley order tried as a factor
_MAX_PALEY = 256


def sylvester(n: int) -> torch.Tensor:
    """The Sylvester Hadamard matrix of order ``n`` (a power of two), float64 +-1."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"Sylvester's construction needs a power of two, not {n}")
    h = torch.ones(1, 1, dtype=torch.float64)
    base = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.kron(base, h)
    return h


def _is_prime(q: int) -> bool:
    return q >= 2 and all(q % d for d in range(2, int(q**0.5) + 1))


def _jacobsthal(q: int) -> torch.Tensor:
    """``Q [q, q]`` float64 with ``Q[i, j]`` the Legendre symbol of ``j - i`` mod ``q``."""
    squares = {(i * i) % q for i in range(1, q)}
    chi = torch.tensor([0.0] + [1.0 if a in squares else -1.0 for a in range(1, q)])
    idx = (torch.arange(q).unsqueeze(0) - torch.arange(q).unsqueeze(1)) % q
    return chi.to(torch.float64)[idx]


def paley(q: int) -> torch.Tensor:
    """Paley's Hadamard matrix from the prime ``q``: order ``q + 1`` for ``q = 3 mod 4``
    (construction I), ``2 (q + 1)`` for ``q = 1 mod 4`` (construction II); float64 +-1."""
    if not _is_prime(q) or q == 2:
        raise ValueError(f"Paley's constructions need an odd prime, not {q}")
    qm = _jacobsthal(q)
    s = torch.zeros(q + 1, q + 1, dtype=torch.float64)
    s[0, 1:] = 1.0
    if q % 4 == 3:
        s[1:, 0] = -1.0
        s[1:, 1:] = qm
        return torch.eye(q + 1, dtype=torch.float64) + s
    s[1:, 0] = 1.0
    s[1:, 1:] = qm
    a = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
    return torch.kron(s, a) + torch.kron(torch.eye(q + 1, dtype=torch.float64), b)


@cache
def _paley_orders() -> dict[int, int]:
    """Non-power-of-two Paley orders up to ``_MAX_PALEY``: order -> the prime giving it."""
    out: dict[int, int] = {}
    for q in range(3, _MAX_PALEY):
        if not _is_prime(q):
            continue
        order = q + 1 if q % 4 == 3 else 2 * (q + 1)
        if order <= _MAX_PALEY and order & (order - 1) and order not in out:
            out[order] = q
    return out


@cache
def _hadamard_factors(n: int) -> tuple[int, ...] | None:
    """Orders whose Kronecker product is a Hadamard matrix of order ``n`` (Paley orders,
    then one power of two last), None if there are none. Of the products, the one of
    smallest summed Paley orders: a factor's dense product costs its order per element,
    where the power of two could take a butterfly (not done yet: it is dense too)."""
    if n >= 1 and not n & (n - 1):
        return (n,)

    def cost(t: tuple[int, ...]) -> tuple[int, int]:
        return sum(o for o in t if o & (o - 1)), len(t)

    best = None
    for order in sorted(_paley_orders()):
        if n % order:
            continue
        rest = _hadamard_factors(n // order)
        if rest is not None:
            cand = tuple(sorted((order, *rest[:-1]))) + rest[-1:]
            if best is None or cost(cand) < cost(best):
                best = cand
    return best


@dataclass(frozen=True)
class Factor:
    """One Kronecker factor of a rotation: its order and how it is made."""

    order: int
    kind: str  # "sylvester", "paley" or "orthogonal" (a seeded random block)


def rotation_factors(n: int) -> tuple[Factor, ...]:
    """The Kronecker factors of the rotation of order ``n``: Hadamard ones where they
    exist; else the largest Hadamard-able part times a random orthogonal block of the
    rest (the smallest such block)."""
    if n < 1:
        raise ValueError(f"a rotation needs a positive size, not {n}")
    orders = _hadamard_factors(n)
    if orders is None:
        # the smallest leftover m with n / m Hadamard-able
        m = next(m for m in range(1, n + 1) if n % m == 0 and _hadamard_factors(n // m))
        return (Factor(m, "orthogonal"), *rotation_factors(n // m))
    return tuple(Factor(o, "sylvester" if not o & (o - 1) else "paley") for o in orders)


def is_hadamard(n: int) -> bool:
    """Whether the rotation of order ``n`` is a (scaled) Hadamard matrix."""
    return all(f.kind != "orthogonal" for f in rotation_factors(n))


@cache
def _factor_matrix(f: Factor, seed: int) -> torch.Tensor:
    """Orthonormal ``[order, order]`` float64 for one factor (cached: never modify it)."""
    if f.kind == "sylvester":
        return sylvester(f.order) / f.order**0.5
    if f.kind == "paley":
        return paley(_paley_orders()[f.order]) / f.order**0.5
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(f.order, f.order, generator=g, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r)).unsqueeze(0)).contiguous()


def rotation_matrix(n: int, seed: int = 0) -> torch.Tensor:
    """The orthonormal rotation ``[n, n]`` float64 of :func:`rotation_factors` (``H /
    sqrt(n)`` where ``n`` has a Hadamard matrix); ``seed`` fixes any random block."""
    out = torch.ones(1, 1, dtype=torch.float64)
    for f in rotation_factors(n):
        out = torch.kron(out, _factor_matrix(f, seed))
    return out


def random_signs(n: int, seed: int) -> torch.Tensor:
    """``[n]`` float64 of +-1, seeded: ``diag(s) H`` is QuaRot's randomized Hadamard."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (n,), generator=g).to(torch.float64) * 2 - 1


def rotate(x: torch.Tensor, n: int, seed: int = 0, transpose: bool = False) -> torch.Tensor:
    """``x @ rotation_matrix(n, seed)`` (``transpose``: ``x @ rotation_matrix(n, seed).T``,
    the inverse) over the last dimension of ``x [..., n]`` through the Kronecker factors
    (one small product per factor instead of an ``n x n`` one), in ``x``'s dtype."""
    if x.shape[-1] != n:
        raise ValueError(f"rotate: the last dimension is {x.shape[-1]}, not {n}")
    factors = rotation_factors(n)
    lead = x.shape[:-1]
    y = x.reshape(-1, *(f.order for f in factors))
    for axis, f in enumerate(factors, start=1):
        m = _factor_matrix(f, seed).to(x.dtype)
        m = m.T if transpose else m
        y = torch.tensordot(y, m, dims=([axis], [0])).movedim(-1, axis)
    return y.reshape(*lead, n)
