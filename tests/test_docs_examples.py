"""Every Python code block of README.md and docs/*.md runs, in order, as a reader would paste it.

The blocks of one page run in one namespace, top to bottom, in an empty working folder, offline.
A block that cannot run here carries a marker on the line before its fence:

    <!-- docs: skip REASON -->        never run (e.g. it needs the network or your own files)
    <!-- docs: requires cuda -->      run only where a CUDA device is present

A block written as an interactive session (``>>>`` prompts) runs as a doctest: its printed
results must match. A skipped block is reported with its reason. A failure names the page and the
line of the block (tracebacks point at the Markdown file's own line numbers).
"""
from __future__ import annotations

import doctest
import io
import re
from pathlib import Path
from typing import List, NamedTuple, Optional

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))

_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
_MARK = re.compile(r"^<!--\s*docs:\s*(skip|requires)\s*(.*?)\s*-->\s*$")


class Block(NamedTuple):
    line: int             # 1-based line of the first code line
    code: str
    skip: Optional[str]   # reason, or None
    requires: Optional[str]


def python_blocks(text: str) -> List[Block]:
    """The ```python blocks of a Markdown text, with the marker of the line before each fence."""
    lines = text.split("\n")
    out, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.groups()
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        if lang in ("python", "py"):
            prev = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            mark = _MARK.match(prev.strip())
            skip = mark.group(2) or "marked skip" if mark and mark.group(1) == "skip" else None
            req = mark.group(2) if mark and mark.group(1) == "requires" else None
            body = [ln[len(indent):] if ln.startswith(indent) else ln for ln in lines[i + 1:j]]
            out.append(Block(i + 2, "\n".join(body), skip, req))
        i = j + 1
    return out


def test_collector_reads_markers():
    text = "a\n```python\nx = 1\n```\n<!-- docs: skip needs the network -->\n```python\ny\n```\n" \
           "<!-- docs: requires cuda -->\n\n```python\nz\n```\n```bash\nls\n```\n"
    blocks = python_blocks(text)
    assert [(b.line, b.code, b.skip, b.requires) for b in blocks] == [
        (3, "x = 1", None, None), (7, "y", "needs the network", None), (12, "z", None, "cuda")]


def _run_doctest(page: Path, b: Block, namespace: dict) -> None:
    test = doctest.DocTestParser().get_doctest(b.code, namespace, page.name, str(page), b.line - 1)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = io.StringIO()
    runner.run(test, out=report.write, clear_globs=False)
    namespace.update(test.globs)                 # DocTest works on a copy of the namespace
    assert runner.failures == 0, f"{page.relative_to(ROOT)}, block at line {b.line}:\n{report.getvalue()}"


def test_doctest_blocks_are_checked():
    page, ns = ROOT / "README.md", {}
    _run_doctest(page, Block(1, ">>> x = 2\n>>> x + 1\n3", None, None), ns)
    assert ns["x"] == 2                          # the page's namespace carries on
    with pytest.raises(AssertionError, match="Expected"):
        _run_doctest(page, Block(1, ">>> 1 + 1\n3", None, None), ns)


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p.read_text())],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_page_examples_run(page: Path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": "__docs__"}
    skipped = []
    threads = torch.get_num_threads()
    try:
        for b in python_blocks(page.read_text()):
            if b.skip:
                skipped.append(f"line {b.line}: {b.skip}")
                continue
            if b.requires == "cuda" and not torch.cuda.is_available():
                skipped.append(f"line {b.line}: needs a CUDA GPU")
                continue
            if b.code.lstrip().startswith(">>>"):
                _run_doctest(page, b, namespace)
                continue
            code = compile("\n" * (b.line - 1) + b.code, str(page), "exec")
            try:
                exec(code, namespace)
            except Exception as e:  # noqa: BLE001 - reported with the block's place
                raise AssertionError(f"{page.relative_to(ROOT)}, block at line {b.line}: "
                                     f"{type(e).__name__}: {e}") from e
    finally:
        torch.set_num_threads(threads)
    if skipped:
        print(f"{page.name}: skipped blocks: " + "; ".join(skipped))
