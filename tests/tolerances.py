"""The tolerance table every test uses, and a comparison helper that explains a mismatch.

| dtype    | max relative error on maps (|a-b|.max / |b|.max) | relative RMS |
|----------|--------------------------------------------------|--------------|
| float64  | 1e-10                                            | 1e-10        |
| float32  | 1e-4                                             | 1e-5         |
| float16  | 1e-2                                             | 5e-3         |
| bfloat16 | 5e-2                                             | 2e-2         |

Relative errors are taken against the largest magnitude of the expected tensor, so a map
whose values are all tiny still has to agree in shape, and exact zeros (ReLU) are no trouble.
"""
from __future__ import annotations

import torch

TOL = {
    torch.float64: dict(max_rel=1e-10, rms_rel=1e-10),
    torch.float32: dict(max_rel=1e-4, rms_rel=1e-5),
    torch.float16: dict(max_rel=1e-2, rms_rel=5e-3),
    torch.bfloat16: dict(max_rel=5e-2, rms_rel=2e-2),
}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype = torch.float32,
                 name: str = "tensor", max_rel: float | None = None) -> None:
    """Assert ``actual`` matches ``expected`` within the table's tolerance for ``dtype``.

    Reports max abs error, relative max and RMS errors, the worst index, and NaN/inf
    counts separately.
    """
    tol = dict(TOL[dtype])
    if max_rel is not None:
        tol["max_rel"] = max_rel
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    bad_a, bad_e = (~torch.isfinite(a)).sum().item(), (~torch.isfinite(e)).sum().item()
    assert bad_a == 0 and bad_e == 0, f"{name}: non-finite values: actual {bad_a}, expected {bad_e}"
    diff = (a - e).abs()
    scale = e.abs().max().item()
    if scale == 0.0:
        assert diff.max().item() == 0.0 if diff.numel() else True, f"{name}: expected all zeros, max |actual| = {a.abs().max().item():.3e}"
        return
    max_abs = diff.max().item()
    rel = max_abs / scale
    rms = diff.pow(2).mean().sqrt().item() / scale
    worst = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape)) if diff.numel() else ()
    msg = (f"{name}: max abs err {max_abs:.3e}, rel max {rel:.3e} (tol {tol['max_rel']:.0e}), "
           f"rel RMS {rms:.3e} (tol {tol['rms_rel']:.0e}), worst at {worst}: "
           f"actual {a[worst].item() if worst else float('nan'):.6e} vs expected {e[worst].item() if worst else float('nan'):.6e}")
    assert rel <= tol["max_rel"] and rms <= tol["rms_rel"], msg
