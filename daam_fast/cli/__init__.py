"""``daam-fast``: explain images, run the demo, build memory banks, and more (see docs/cli.md).

One module per sub-command (``explain``, ``demo``, ``bank``, ``bench``, ``video``, ``eval``,
``batch``, ``monitor``, ``export``), each with ``add_cli(subparsers)``; what they share (modes, quiet, overwrite, the
model spec and bank, the DAAM options and their checks, exit codes) is :mod:`daam_fast.cli.options`.
A command raises :class:`UsageError` for bad usage; :func:`main` prints it and returns 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from .._extras import missing_extra
from .options import EXIT_OK, EXIT_USAGE, UsageError

__all__ = ["main", "build_parser", "COMMANDS"]

# The sub-commands, in the order of ``daam-fast --help``: module of this package -> add_cli(subparsers).
COMMANDS = ("explain", "demo", "bank", "bench", "video", "eval", "batch", "monitor", "export")


def build_parser() -> argparse.ArgumentParser:
    """The ``daam-fast`` parser with every sub-command that can be imported here (the others are
    named in the epilog with the reason)."""
    ap = argparse.ArgumentParser(prog="daam-fast", description="Dynamic Accumulated Attention Maps for ViTs, fast.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    unavailable = []
    for name in COMMANDS:
        try:
            importlib.import_module(f"{__name__}.{name}").add_cli(sub)
        except ImportError as e:
            unavailable.append(f"{name} ({e})")
    if unavailable:
        ap.epilog = "unavailable sub-commands: " + "; ".join(unavailable)
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``daam-fast`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code:
    0 all done, 1 some inputs failed (the others done), 2 bad usage or a missing optional
    dependency (nothing written; one line on stderr names the extra to install)."""
    from PIL import Image
    from ..io import MAX_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS          # the application's choice: 200-megapixel photos are read
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "func", None):
        ap.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or EXIT_OK)
    except UsageError as e:
        print(f"daam-fast {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ImportError as e:                  # an optional dependency: one line naming its extra
        missing = missing_extra(e, "this command")
        if missing is None:
            raise
        print(f"daam-fast {args.command}: {missing}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
