"""Rotations of any size: Hadamard where one exists, orthogonal always."""

import pytest
import torch

from lmpress.transforms.hadamard import (
    is_hadamard,
    paley,
    random_signs,
    rotate,
    rotation_factors,
    rotation_matrix,
    sylvester,
)


@pytest.mark.parametrize("q", [3, 5, 7, 11, 13, 19, 23, 43])
def test_paley_matrices_are_hadamard(q):
    h = paley(q)
    n = h.shape[0]
    assert n == (q + 1 if q % 4 == 3 else 2 * (q + 1))
    assert set(h.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(h @ h.T, n * torch.eye(n, dtype=torch.float64))


def test_sylvester_and_bad_orders():
    h = sylvester(16)
    assert torch.equal(h @ h.T, 16 * torch.eye(16, dtype=torch.float64))
    with pytest.raises(ValueError, match="power of two"):
        sylvester(12)
    with pytest.raises(ValueError, match="odd prime"):
        paley(9)


# the default model's hidden (576) and MLP (1536) sizes, and head sizes
@pytest.mark.parametrize("n", [1, 2, 4, 12, 20, 28, 48, 64, 576, 960, 1536])
def test_hadamard_orders_give_scaled_hadamard_matrices(n):
    assert is_hadamard(n)
    r = rotation_matrix(n)
    assert torch.allclose(r.abs(), torch.full_like(r, n**-0.5), atol=1e-12)
    assert torch.allclose(r @ r.T, torch.eye(n, dtype=torch.float64), atol=1e-10)


def test_factors_multiply_to_the_order():
    """The product of least dense work: small Paley factors, one power of two last."""
    assert [(f.order, f.kind) for f in rotation_factors(576)] == [
        (12, "paley"),
        (12, "paley"),
        (4, "sylvester"),
    ]
    assert [f.order for f in rotation_factors(1536)] == [12, 128]
    assert [f.order for f in rotation_factors(960)] == [12, 20, 4]


@pytest.mark.parametrize("n", [3, 9, 18, 11008 // 8])
def test_other_orders_fall_back_to_an_orthogonal_block(n):
    assert not is_hadamard(n)
    kinds = [f.kind for f in rotation_factors(n)]
    assert kinds[0] == "orthogonal" and "orthogonal" not in kinds[1:]
    r = rotation_matrix(n, seed=3)
    assert torch.allclose(r @ r.T, torch.eye(n, dtype=torch.float64), atol=1e-10)
    assert torch.equal(r, rotation_matrix(n, seed=3))
    assert not torch.equal(r, rotation_matrix(n, seed=4))


@pytest.mark.parametrize("n", [576, 24, 18])
def test_rotate_is_the_dense_product(n):
    x = torch.randn(3, 5, n, dtype=torch.float64)
    assert torch.allclose(rotate(x, n, seed=1), x @ rotation_matrix(n, seed=1), atol=1e-10)
    with pytest.raises(ValueError, match="last dimension"):
        rotate(x, n + 4)


def test_a_rotated_linear_keeps_its_function():
    """(x R)(W R)^T = x W^T: the rotation folds into the weight, float32 tolerance."""
    n = 576
    w, x = torch.randn(64, n), torch.randn(7, n)
    r = (torch.diag(random_signs(n, 0)) @ rotation_matrix(n)).to(torch.float32)
    assert torch.allclose((x @ r) @ (w @ r).T, x @ w.T, atol=1e-3, rtol=1e-4)
