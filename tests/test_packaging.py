"""Packaging: the core alone runs (a feature whose extra is missing fails with one line naming it),
the sdist and the wheel build, and the wheel installed outside the source tree runs the demo.

The core-only environment is a fresh venv whose site-packages links the installed distributions
of the core dependencies (torch, timm, numpy, pillow, safetensors, tqdm) and what they require,
nothing else: cheap to make (no download, no copy), and without av, matplotlib, ray, ...
"""
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ("torch", "timm", "numpy", "pillow", "safetensors", "tqdm")
OPTIONAL = ("av", "matplotlib", "ray", "pyarrow", "transformers", "tensorboard", "lightning", "onnx", "onnxscript",
            "onnxruntime", "pillow_heif", "scipy", "IPython", "zarr")


def _core_closure() -> dict:
    """{name: Distribution} of the core dependencies and everything they require (no extras)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    seen, todo = {}, list(CORE)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[name] = dist
        for r in dist.requires or []:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def _core_env(root: Path) -> Path:
    """A venv at ``root`` with the core dependencies only; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    site = root / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    dists = _core_closure()
    missing = [c for c in CORE if c not in dists]
    if missing:
        pytest.skip(f"core dependencies not installed here: {missing}")
    for dist in dists.values():
        for f in dist.files or []:
            if f.parts[0] != ".." and not (site / f.parts[0]).exists():
                os.symlink(dist.locate_file(f.parts[0]), site / f.parts[0])
    return root / "bin" / "python"


def _run(py: Path, code: str, cwd: Path, env_extra: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", **env_extra)
    return subprocess.run([str(py), "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


# Runs in the core-only venv with this source tree on PYTHONPATH: the core works, and each feature
# whose extra is missing fails with one line naming the extra (through the CLI and the Python API).
CORE_SCRIPT = r"""
import contextlib, io, json, os, sys
import torch
OPTIONAL = %r
found = [m for m in OPTIONAL if __import__("importlib.util").util.find_spec(m) is not None]
assert not found, f"not a core-only environment: {found}"
import daam_fast
from daam_fast import DAAM, prepare, render, zoo
from daam_fast.zoo.shapes import make_shapes, save_pngs
model = zoo.load_model()
x, rgb = prepare(make_shapes(2, seed=1).images, model)
res = DAAM(model)(x)
frames = render(res.maps, images=rgb)
out = {"maps": list(res.maps.shape), "frames": list(frames.shape),
       "loaded": sorted(m for m in sys.modules if m.split(".")[0] in OPTIONAL)}

from daam_fast.cli import main
def cli(*argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(list(argv))
    return rc, err.getvalue()
paths = save_pngs(make_shapes(2, seed=2), "pics")
out["explain"] = cli("explain", "pics", "--out", "ex", "--quiet", "--outputs", "overlay,maps,html")
open("clip.mp4", "wb").write(os.urandom(4096))
open("photo.heic", "wb").write(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
out["cli"] = {
    "video": cli("video", "clip.mp4", "--out", "v.mp4"),
    "batch": cli("batch", "pics", "--out", "b"),
    "eval": cli("eval", "--out", "e", "--num-images", "2"),
    "heif": cli("explain", "photo.heic", "--out", "h", "--quiet"),
    "mp4": cli("explain", "pics", "--out", "m", "--quiet", "--outputs", "overlay,mp4"),
    "export": cli("export", "--out", "m.onnx"),
}
def api(f):
    try:
        f()
    except ImportError as e:
        return str(e)
    return None
from daam_fast.io import read_image
from daam_fast.distributed import explain_dataset
from daam_fast.video import explain_video
out["api"] = {"ray": api(lambda: explain_dataset("pics", "b2")),
              "video": api(lambda: explain_video("clip.mp4", "v2.mp4", model))}
import daam_fast.monitor as monitor
out["api"]["tensorboard"] = api(lambda: monitor.AttentionMonitor(model, make_shapes(1).images, log_dir="mon").log(0))
out["api"]["lightning"] = api(lambda: monitor.DAAMCallback)
from daam_fast.export import to_onnx
out["api"]["onnx"] = api(lambda: to_onnx(model, "m2.onnx"))
from daam_fast.io import ImageReadError
try:
    read_image("photo.heic")
except ImageReadError as e:                      # listed as a failed input, with the reason
    out["api"]["heif"] = str(e)
print("RESULT " + json.dumps(out))
"""


def test_core_only_environment(tmp_path):
    """import daam_fast, DAAM, render, prepare and ``explain`` need the core alone; video, batch
    (Ray), eval (matplotlib), HEIC, the monitor's TensorBoard and Lightning parts and the ONNX
    export fail with one line that names their extra."""
    py = _core_env(tmp_path / "core")
    work = tmp_path / "work"
    work.mkdir()
    r = _run(py, CORE_SCRIPT % (OPTIONAL,), work, {"PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.split("RESULT ", 1)[1])
    assert out["maps"][0] == 2 and out["frames"][:2] == out["maps"][:2] and not out["loaded"]
    rc, err = out["explain"]
    assert rc == 0, err
    assert (work / "ex" / "explorer.html").exists() and (work / "ex" / "summary.json").exists()
    for feature, extra in (("video", "video"), ("batch", "ray"), ("eval", "eval"), ("heif", "heif"),
                           ("mp4", "video"), ("export", "export")):
        rc, err = out["cli"][feature]
        hint = f'pip install "daam-fast[{extra}]"'
        assert rc in (1, 2) and hint in err, (feature, rc, err)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and "Traceback" not in err, (feature, err)
    for feature, extra in (("heif", "heif"), ("ray", "ray"), ("video", "video"), ("tensorboard", "monitor"),
                           ("lightning", "monitor"), ("onnx", "export")):
        msg = out["api"][feature]
        assert msg and f'pip install "daam-fast[{extra}]"' in msg and "\n" not in msg, (feature, msg)


def test_version_is_one_source():
    """pyproject.toml takes the version from daam_fast.__version__ (checked against the installed
    metadata by the wheel test)."""
    import tomllib
    import daam_fast
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in cfg["project"]["dynamic"]
    assert cfg["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "daam_fast.__version__"}
    assert daam_fast.__version__ == "0.2.0"
    assert cfg["project"]["license"] == "Apache-2.0" and (ROOT / "LICENSE").read_text().count("Apache License") >= 1


def test_extras_cover_the_optional_imports():
    """Every optional module the package names has an extra, and every extra is in ``all``
    (``test`` besides: it also lists the test tools and the docs site's)."""
    import tomllib
    from daam_fast._extras import EXTRAS
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for module, extra in EXTRAS.items():
        assert extra in extras, (module, extra)
    every = {"video", "ray", "hf", "eval", "monitor", "export", "heif", "triton"}
    assert every <= set(extras) and {"docs", "test", "all"} <= set(extras)
    def named(req):                                 # "daam-fast[a,b]" -> {"a", "b"}
        return set(req.split("[", 1)[1].rstrip("]").split(",")) if req.startswith("daam-fast[") else set()
    assert set().union(*map(named, extras["all"])) == every
    # the suite runs every feature but triton (it comes with torch) and builds the docs site
    assert set().union(*map(named, extras["test"])) == (every - {"triton"}) | {"docs"}


def test_colour_tables_are_matplotlibs():
    matplotlib = pytest.importorskip("matplotlib")
    import base64
    import numpy as np
    from daam_fast._colour_tables import COLOUR_TABLES
    for name, b64 in COLOUR_TABLES.items():
        table = np.frombuffer(base64.b64decode(b64), np.uint8).reshape(256, 3)
        want = np.floor(matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255 + 0.5)
        assert (table == want).all(), name


def _source_copy(dst: Path) -> Path:
    """The tracked (and untracked, not ignored) files of this tree, copied to ``dst``."""
    try:
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                               capture_output=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the build test copies the tracked files")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            (dst / f).write_bytes(src.read_bytes())
    return dst


@pytest.mark.slow
def test_sdist_and_wheel_build_and_the_wheel_runs_the_demo(tmp_path):
    """python -m build: an sdist, and a wheel built from it that carries _C and the shipped
    weights; the wheel installed into a core-only venv outside the source tree runs the demo."""
    pytest.importorskip("build", reason="the build front end is not installed (the test extra has it)")
    src = _source_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(DAAM_FAST_SKIP_CUDA_BUILD="1")       # the C++ kernels only: the CUDA build is gpu-check's
    r = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (sdist,) = dist.glob("daam_fast-*.tar.gz")
    (wheel,) = dist.glob("daam_fast-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("daam_fast/_C.") and n.endswith(".so") for n in names), "no compiled extension"
    assert {"daam_fast/zoo/weights/shapes_vit.safetensors", "daam_fast/zoo/weights/shapes_vit_bank.pt"} <= set(names)
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in meta and any(n.endswith("licenses/LICENSE") for n in names)

    py = _core_env(tmp_path / "venv")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                        str(wheel)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    r = _run(py, """
        import importlib.metadata as m, json, daam_fast, daam_fast._ext as e
        print(json.dumps([daam_fast.__file__, daam_fast.__version__, m.version("daam-fast"), e.has_cpp()]))
        """, run_dir, {})
    assert r.returncode == 0, r.stderr[-3000:]
    where, version, meta_version, has_cpp = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(where).is_relative_to(tmp_path / "venv") and version == meta_version and has_cpp
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    r = subprocess.run([str(py.parent / "daam-fast"), "demo", "--out", "demo", "--num-images", "2", "--quiet"],
                       cwd=run_dir, env=dict(env, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert (run_dir / "demo" / "supervised" / "summary.json").exists()
    assert 'pip install "daam-fast[eval]"' in r.stdout             # the overview figure needs matplotlib
    assert sdist.stat().st_size > 0


def test_require_names_the_extra(monkeypatch):
    from daam_fast._extras import MissingExtra, missing_extra, require
    assert require("json", "x").dumps(1) == "1"
    monkeypatch.setitem(sys.modules, "av", None)                      # import av -> ImportError
    with pytest.raises(MissingExtra, match=r'^av is needed for video files: pip install "daam-fast\[video\]"$') as e:
        require("av", "video files")
    assert isinstance(e.value, ImportError)
    err = ModuleNotFoundError("No module named 'onnxruntime'", name="onnxruntime")
    assert missing_extra(err, "this") == 'onnxruntime is needed for this: pip install "daam-fast[export]"'
    assert missing_extra(ModuleNotFoundError("x", name="not_optional"), "this") is None
