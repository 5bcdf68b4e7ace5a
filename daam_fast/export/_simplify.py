"""Fewer, larger ops in a traced graph: matrix products on their operands' own shapes.

``make_fx`` records the aten ops below autograd, where ``linear`` and ``matmul`` have been
decomposed: a linear layer on (B, N, C) becomes view -> addmm -> view, and a batched
product of (B, H, R, d) tensors expand -> clone -> view -> bmm -> view, forward and
backward alike. Each view is an op in ONNX Runtime, whose fixed cost outweighs the arithmetic
at small token counts (the row graph's R rows). :func:`fold_products` puts the products back
on the operands before the flattening: ``aten.matmul`` (one ``MatMul``) and ``aten.linear``
(``MatMul`` and ``Add``), and drops the views, expands and copies left without users.

Every rewrite computes the same values (the same products, on the same numbers); the tests
compare the folded graph with eager DAAM on every model family.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import fx
from torch.fx.experimental.symbolic_shapes import statically_known_true

__all__ = ["fold_products"]

aten = torch.ops.aten
_VIEWS = (aten.view.default, aten._unsafe_view.default, aten.reshape.default)
_COPIES = (aten.clone.default, aten.alias.default)


def _shape(node) -> Optional[Tuple]:
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def _same(a, b) -> bool:
    """The two (symbolic) sizes are equal for every batch."""
    if len(a) != len(b):
        return False
    return all(statically_known_true(x == y) for x, y in zip(a, b))


def _prod(dims):
    return math.prod(dims) if dims else 1


def _operand(node: fx.Node) -> Optional[Tuple[fx.Node, bool, Tuple]]:
    """(X, transposed, lead) where ``node``, a 3-D bmm operand (P, m, k), is X (…, m, k)
    expanded to the leading dims ``lead`` and flattened (after copies, same-shape or
    broadcasting expands, and for ``transposed`` a swap of its last two dims); None where it
    is not that."""
    flip = False
    while node.op == "call_function" and (node.target in _COPIES or node.target == aten.transpose.int):
        if node.target == aten.transpose.int:
            dims = sorted(d % 3 for d in node.args[1:3])
            if dims != [1, 2]:
                return None
            flip = not flip
        node = node.args[0]
    if node.op != "call_function" or node.target not in _VIEWS:
        return None
    flat, src = _shape(node), node.args[0]
    while isinstance(src, fx.Node) and src.op == "call_function" and (
            src.target in _COPIES or src.target == aten.expand.default):
        inner = src.args[0]
        if src.target == aten.expand.default and len(_shape(inner) or ()) != len(_shape(src) or ()):
            break
        src = inner
    full = _shape(src)
    if flat is None or full is None or len(full) < 3 or len(flat) != 3:
        return None
    expanded = _shape(node.args[0])
    if not (_same(full[-2:], flat[1:]) and _same((_prod(expanded[:-2]),), flat[:1])):
        return None
    return src, flip, expanded[:-2]


def _fold_bmm(graph: fx.Graph, bmm: fx.Node) -> bool:
    users = list(bmm.users)
    if len(users) != 1 or users[0].op != "call_function" or users[0].target not in _VIEWS:
        return False
    out = users[0]
    a, b = _operand(bmm.args[0]), _operand(bmm.args[1])
    shape = _shape(out)
    if a is None or b is None or shape is None or len(shape) < 3:
        return False
    # the operands were expanded to the output's leading dims, from dims that broadcast to them
    # (matmul broadcasts as the expands did)
    for src, _, lead in (a, b):
        own = _shape(src)[:-2]
        if not _same(lead, shape[:-2]) or len(own) != len(lead) or not all(
                statically_known_true(x == y) or statically_known_true(x == 1) for x, y in zip(own, lead)):
            return False
    with graph.inserting_before(out):
        args = []
        for src, flip, _ in (a, b):
            args.append(graph.call_function(aten.transpose.int, (src, -1, -2)) if flip else src)
        new = graph.call_function(aten.matmul.default, tuple(args))
    new.meta = dict(out.meta)
    out.replace_all_uses_with(new)
    return True


def _fold_linear(graph: fx.Graph, mm: fx.Node) -> bool:
    """view(x, (M, K)) -> addmm(b, ., W^T) | mm(., W) -> view(., (…, O)): linear / matmul on x."""
    users = list(mm.users)
    if len(users) != 1 or users[0].op != "call_function" or users[0].target not in _VIEWS:
        return False
    out = users[0]
    bias, lhs, rhs = (mm.args if mm.target == aten.addmm.default else (None, *mm.args))
    if mm.kwargs or not isinstance(lhs, fx.Node) or lhs.op != "call_function" or lhs.target not in _VIEWS:
        return False
    x = lhs.args[0]
    full, flat, shape = _shape(x), _shape(lhs), _shape(out)
    if full is None or flat is None or shape is None or len(full) < 2 or len(flat) != 2:
        return False
    if not (_same(full[-1:], flat[1:]) and _same(full[:-1], shape[:-1])):
        return False
    with graph.inserting_before(out):
        if (bias is not None and isinstance(rhs, fx.Node) and rhs.op == "call_function"
                and rhs.target == aten.t.default):
            new = graph.call_function(aten.linear.default, (x, rhs.args[0], bias))
        else:
            new = graph.call_function(aten.matmul.default, (x, rhs))
            if bias is not None:
                new = graph.call_function(aten.add.Tensor, (new, bias))
    new.meta = dict(out.meta)
    out.replace_all_uses_with(new)
    return True


def fold_products(gm: fx.GraphModule) -> fx.GraphModule:
    """Fold the flattened products of a ``make_fx`` graph back onto their operands, in place.

    Returns:
        The same GraphModule, recompiled.
    """
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target == aten.bmm.default:
            _fold_bmm(graph, node)
        elif node.target in (aten.mm.default, aten.addmm.default):
            _fold_linear(graph, node)
    graph.eliminate_dead_code()
    graph.lint()
    gm.recompile()
    return gm
