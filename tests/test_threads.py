"""One model shared by threads and asyncio tasks: plain inference and explanations at once.

Each explanation's capture state lives in its own context (thread / task); a forward with no
explanation active in its context runs the library's code. Checked here on the shipped model:
inference outputs equal the reference logits bit for bit, every map equals the single-threaded
map, no call fails, and afterwards the model's modules, forwards and flags are the originals.
"""
import asyncio
import threading

import pytest
import torch

from daam_fast import DAAM
from daam_fast._session import current
from daam_fast.preprocess import input_spec, prepare
from daam_fast.reference import daam_reference
from daam_fast.zoo import load_model
from daam_fast.zoo.shapes import make_shapes
from tolerances import assert_close

METHODS = ("grad", "row", "direct")
ROUNDS = 3                    # each explaining worker: every method ROUNDS times (bounded work, not time)


@pytest.fixture(scope="module")
def setup():
    model = load_model("shapes_vit")
    pics = make_shapes(12, seed=7).images
    spec = input_spec(model)
    xs = [prepare(pics[i:i + 4], spec)[0] for i in (0, 4, 8)]            # 3 batches of 4
    with torch.no_grad():
        logits = [model(x) for x in xs]
    want = {(m, i): DAAM(model, method=m)(x).block_maps for m in METHODS for i, x in enumerate(xs)}
    return model, xs, logits, want


def _snapshot(model):
    """Everything an explanation may touch, by identity: the modules, their instance forwards,
    training flags and the parameters' requires_grad."""
    mods = list(model.named_modules())
    return ([(n, id(m), m.__dict__.get("forward"), m.training) for n, m in mods],
            [(n, p.requires_grad) for n, p in model.named_parameters()])


def _restored(model, before):
    assert _snapshot(model) == before
    for _, m in model.named_modules():
        assert "forward" not in m.__dict__ and m.forward.__func__ is type(m).forward
        assert not m._forward_pre_hooks and not m._forward_hooks


def _fresh_daam_exact(model, x):
    ref = daam_reference(model, x)
    assert_close(DAAM(model)(x).block_maps, ref.block_maps, name="fresh DAAM after the threads")


def _infer(model, x, want, n, errors, stop=None):
    try:
        i = 0
        while (stop is None and i < n) or (stop is not None and not stop.is_set()):
            with torch.no_grad():
                y = model(x)
            if not torch.equal(y, want):
                errors.append(f"inference output differs from the reference logits (call {i})")
            i += 1
        if i == 0:
            errors.append("no inference call ran")
    except BaseException as e:                                   # noqa: BLE001 (reported by the test)
        errors.append(repr(e))


def _explain(explain, xs, want, start, errors, done=None):
    """ROUNDS x every method, alternating; batch and method shift with ``start``."""
    try:
        for r in range(ROUNDS):
            for j in range(len(METHODS)):
                m, i = METHODS[(start + j) % len(METHODS)], (start + r + j) % len(xs)
                assert_close(explain(m)(xs[i]).block_maps, want[(m, i)], name=f"{m} batch {i} in a thread")
                if current() is not None:
                    errors.append("a call's state stayed active in its thread")
    except BaseException as e:                                   # noqa: BLE001
        errors.append(repr(e))
    finally:
        if done is not None:
            done.set()


def test_two_inference_and_two_explaining_threads(setup):
    model, xs, logits, want = setup
    before = _snapshot(model)
    errors: list = []
    stop = threading.Event()
    shared = {m: DAAM(model, method=m) for m in METHODS}          # one explainer per method, shared ...
    one_shot = lambda m: DAAM(model, method=m)                   # noqa: E731 ... and a new one per call
    ends = [threading.Event(), threading.Event()]
    threads = [threading.Thread(target=_infer, args=(model, xs[k], logits[k], 0, errors, stop)) for k in (0, 1)]
    threads += [threading.Thread(target=_explain, args=(lambda m: shared[m], xs, want, 0, errors, ends[0])),
                threading.Thread(target=_explain, args=(one_shot, xs, want, 1, errors, ends[1]))]
    with shared["grad"]:                                          # held across the run by this thread too
        for t in threads:
            t.start()
        for e in ends:
            e.wait(timeout=300)
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    _restored(model, before)
    _fresh_daam_exact(model, xs[0])


def test_asyncio_to_thread_eight_tasks(setup):
    model, xs, logits, want = setup
    before = _snapshot(model)
    errors: list = []

    async def serve():
        tasks = [asyncio.to_thread(_explain, lambda m: DAAM(model, method=m), xs, want, k, errors)
                 for k in range(4)]
        tasks += [asyncio.to_thread(_infer, model, xs[k % 3], logits[k % 3], 6, errors) for k in range(4)]
        await asyncio.gather(*tasks)
        return current()

    assert asyncio.run(serve()) is None                          # nothing leaks into the event loop's context
    assert errors == []
    _restored(model, before)
    _fresh_daam_exact(model, xs[1])


def test_error_in_one_thread_leaves_the_others_correct(setup):
    model, xs, logits, want = setup
    before = _snapshot(model)
    errors: list = []
    refused = []

    def bad():
        for m in METHODS * 2:
            try:
                DAAM(model, method=m)(xs[2], target=99)           # the shipped model has 6 classes
            except ValueError as e:
                refused.append(str(e))

    threads = [threading.Thread(target=bad),
               threading.Thread(target=_explain, args=(lambda m: DAAM(model, method=m), xs, want, 2, errors)),
               threading.Thread(target=_infer, args=(model, xs[0], logits[0], 20, errors))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    assert len(refused) == 2 * len(METHODS) and all("99" in r for r in refused), refused
    _restored(model, before)
    _fresh_daam_exact(model, xs[2])


def test_activation_checkpointing_recompute_in_another_thread(setup):
    """On a GPU, autograd runs the backward (and with it checkpointing's recompute) in its own
    device thread, where the call's context is not current: the recompute restores it."""
    model, xs, _, want = setup
    real = torch.autograd.grad

    def grad_elsewhere(*args, **kwargs):                         # the backward in a bare thread
        out = []
        t = threading.Thread(target=lambda: out.append(real(*args, **kwargs)))
        t.start()
        t.join()
        return out[0]

    torch.autograd.grad = grad_elsewhere
    try:
        res = DAAM(model, activation_checkpointing=True)(xs[0])
    finally:
        torch.autograd.grad = real
    assert_close(res.block_maps, want[("grad", 0)], name="checkpointed, backward in another thread")


@pytest.mark.parametrize("method", METHODS)
def test_explain_inside_inference_mode(setup, method):
    """Inside ``torch.inference_mode()`` a call leaves it for its duration: inference tensors as
    inputs, ordinary tensors out, the same maps."""
    model, xs, _, want = setup
    with torch.inference_mode():
        x = xs[1].clone()
        res = DAAM(model, method=method)(x)
    assert x.is_inference() and not res.block_maps.is_inference()
    assert_close(res.block_maps, want[(method, 1)], name=f"{method} under inference_mode")


def test_serving_page_examples_run(capsys):
    """docs/serving.md's examples run as written (no network)."""
    import pathlib
    import re
    page = (pathlib.Path(__file__).parent.parent / "docs" / "serving.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(blocks) == 2
    for code in blocks:
        exec(compile(code, "docs/serving.md", "exec"), {"__name__": "serving_example"})
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "(4, 6, 8, 8)" in out[0], out
