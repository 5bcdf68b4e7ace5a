"""Regenerate the ``daam-fast ... --help`` blocks of docs/cli.md from the parser.

Every fenced block that starts with ``usage: daam-fast COMMAND`` is replaced by the current
help of COMMAND, 100 columns wide; the prose around the blocks is left alone.

    python -m daam_fast.cli._docs docs/cli.md          # rewrite in place
    python -m daam_fast.cli._docs docs/cli.md --check  # exit 1 if a block is out of date
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from typing import List, Optional

BLOCK = re.compile(r"```\n(usage: daam-fast ((?:bank )?[a-z]+)\b.*?)\n```", re.S)


def command_help(command: str, columns: int = 100) -> str:
    """The ``--help`` text of ``daam-fast COMMAND`` (e.g. "video", "bank build") at ``columns``."""
    from . import build_parser
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(columns)
    try:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
            build_parser().parse_args(command.split() + ["--help"])
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return buf.getvalue().rstrip("\n")


def regenerate(text: str) -> str:
    """``text`` (docs/cli.md) with every help block replaced by the current help."""
    return BLOCK.sub(lambda m: "```\n" + command_help(m.group(2)) + "\n```", text)


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    paths = [a for a in args if a != "--check"] or ["docs/cli.md"]
    stale = []
    for path in paths:
        with open(path) as f:
            text = f.read()
        new = regenerate(text)
        if new != text:
            stale.append(path)
            if not check:
                with open(path, "w") as f:
                    f.write(new)
    if check and stale:
        print(f"out of date: {', '.join(stale)} (python -m daam_fast.cli._docs {' '.join(stale)})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
