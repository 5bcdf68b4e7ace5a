"""The CUDA path of the explain outputs (make gpu-check selects it with -m cuda; skipped without a
GPU): overlays rendered and encoded on the GPU (nvjpeg through torchvision.io.encode_jpeg on a
batch of CUDA tensors), only the file bytes copied to the host. Its CPU twin runs in
tests/test_outputs.py (test_overlays_cpu_twin_of_the_gpu_path)."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def _picture(H, W, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 8, generator=g) * 255, size=(H, W), mode="bicubic",
                                        align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)[0]


def _psnr(a, b) -> float:
    err = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if err == 0 else 10 * np.log10(255.0 ** 2 / err)


def test_overlays_encoded_on_the_gpu(tmp_path, monkeypatch):
    import torchvision.io
    from daam_fast.outputs import ExplainOptions
    from daam_fast.outputs.writer import ImageJob, render_overlays
    from daam_fast.render import render
    seen = []
    real = torchvision.io.encode_jpeg

    def spy(images, quality=75):
        seen.append([t.device.type for t in images])
        out = real(images, quality=quality)
        seen.append([t.device.type for t in out])
        return out
    monkeypatch.setattr(torchvision.io, "encode_jpeg", spy)
    torch.manual_seed(0)
    jobs = [ImageJob(f"p{i}.png", f"p{i}", str(tmp_path), i, _picture(*(120, 160) if i % 2 else (90, 120), seed=i),
                     torch.rand(4, 7, 9).cumsum(0).cuda(), 1, "one") for i in range(5)]
    files = render_overlays(jobs, ExplainOptions())
    assert seen and all(d == "cuda" for devs in seen[::2] for d in devs)      # one nvjpeg call per picture size
    assert len(seen) == 4                                                     # two sizes: two calls, in and out
    for job, data in zip(jobs, files):
        assert isinstance(data, bytes) and data[:2] == b"\xff\xd8"
        want = render(job.maps[None, -1:].cpu(), images=job.picture[None])[0, 0].numpy()
        got = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert got.shape == want.shape and _psnr(got, want) >= 35


def test_explain_files_on_cuda(tmp_path):
    """explain_files with a CUDA model: the maps equal the CPU run's, the overlays decode close to them."""
    from daam_fast.outputs import explain_files, load_maps
    from daam_fast.zoo import load_model
    paths = []
    for i in range(3):
        p = tmp_path / f"pic{i}.png"
        Image.fromarray(_picture(96, 128, seed=i).permute(1, 2, 0).numpy()).save(p)
        paths.append(str(p))
    cpu = explain_files(paths, load_model("shapes_vit"), str(tmp_path / "cpu"), quiet=True)
    gpu = explain_files(paths, load_model("shapes_vit").cuda(), str(tmp_path / "gpu"), quiet=True)
    assert [e["files"] for e in gpu["explained"]] == [e["files"] for e in cpu["explained"]]
    a, b = load_maps(str(tmp_path / "cpu")), load_maps(str(tmp_path / "gpu"))
    np.testing.assert_allclose(np.asarray(b["maps"]), np.asarray(a["maps"]), rtol=1e-4, atol=1e-5)
    for e in gpu["explained"]:
        g = np.asarray(Image.open(tmp_path / "gpu" / e["files"][0]).convert("RGB"))
        c = np.asarray(Image.open(tmp_path / "cpu" / e["files"][0]).convert("RGB"))
        assert g.shape == c.shape == (96, 128, 3) and _psnr(g, c) >= 35
