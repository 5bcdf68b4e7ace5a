"""daam_fast.export._simplify.fold_products: the flattened products make_fx records are put back
on their operands (aten.matmul / aten.linear) with the same values, including broadcast batch
dims, transposed operands and a symbolic batch; products it cannot prove to be flattens stay."""
import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from daam_fast.export._simplify import fold_products

aten = torch.ops.aten


def _trace(f, *args):
    return make_fx(f, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*args)


def _ops(gm):
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


def _fold_and_compare(f, *args):
    gm = _trace(f, *args)
    before = _ops(gm)
    expected = gm(*args)
    fold_products(gm)
    got = gm(*args)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got, f(*args), rtol=1e-5, atol=1e-5)
    return before, _ops(gm)


def test_linear_on_3d_input_becomes_linear():
    w, b = torch.randn(7, 5), torch.randn(7)
    before, after = _fold_and_compare(lambda x: torch.nn.functional.linear(x, w, b).relu(), torch.randn(3, 4, 5))
    assert aten.addmm.default in before
    assert aten.addmm.default not in after and aten.linear.default in after
    assert aten.view.default not in after


def test_batched_products_with_broadcast_and_transpose_become_matmul():
    def f(q, k, v):
        a = (q @ k.transpose(-1, -2)).softmax(-1)          # (B, H, R, N)
        return a @ v                                       # v (1, H, N, d): broadcast over B
    q, k, v = torch.randn(2, 3, 1, 8), torch.randn(2, 3, 6, 8), torch.randn(1, 3, 6, 8)
    before, after = _fold_and_compare(f, q, k, v)
    assert before.count(aten.bmm.default) == 2
    assert aten.bmm.default not in after and after.count(aten.matmul.default) == 2


def test_backward_products_fold_and_keep_values():
    w = torch.randn(6, 5)

    def f(x):
        x = x.detach().requires_grad_(True)
        y = torch.nn.functional.linear(x, w).tanh() @ torch.ones(6, 2)
        return torch.autograd.grad(y.sum(), x)[0]
    before, after = _fold_and_compare(f, torch.randn(4, 3, 5))
    assert aten.mm.default in before
    assert aten.mm.default not in after


def test_a_view_that_is_not_a_flatten_is_left_alone():
    def f(a, b):
        # (2, 3, 4) read as (3, 2, 4): not the operand's leading dims flattened in order
        n, m = a.shape[0], a.shape[1]
        return torch.bmm(a.reshape(m, n, 4), b).reshape(m, 1, n, 5)
    a, b = torch.randn(2, 3, 4), torch.randn(3, 4, 5)
    before, after = _fold_and_compare(f, a, b)
    assert aten.bmm.default in after


@pytest.mark.parametrize("batch", [1, 5])
def test_the_batch_stays_symbolic(batch):
    w = torch.randn(4, 4)
    gm = _trace(lambda x: torch.nn.functional.linear(x, w) @ x.transpose(-1, -2), torch.randn(2, 3, 4))
    fold_products(gm)
    x = torch.randn(batch, 3, 4)
    torch.testing.assert_close(gm(x), torch.nn.functional.linear(x, w) @ x.transpose(-1, -2))


def test_a_product_read_back_with_other_batch_dims_is_left_alone():
    def f(a, b):
        # (2, 3) batch flattened to 6, the product read back as a (3, 2) batch
        n, m = a.shape[0], a.shape[1]
        return torch.bmm(a.reshape(n * m, 4, 5), b).reshape(m, n, 4, 7)
    a, b = torch.randn(2, 3, 4, 5), torch.randn(6, 5, 7)
    before, after = _fold_and_compare(f, a, b)
    assert aten.bmm.default in after
