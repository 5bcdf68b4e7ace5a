"""``daam-fast monitor view LOG_DIR --out page.html``: the page of an attention monitor's run."""
from __future__ import annotations

import os

from .options import EXIT_OK, EXIT_USAGE, UsageError, add_overwrite, refuse_existing

__all__ = ["add_cli"]


def _cmd_view(args) -> int:
    from ..monitor import load_history
    from ..monitor.view import write_page
    refuse_existing(args.out, args.overwrite)
    try:
        h = load_history(args.log_dir)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    if not len(h):
        raise UsageError(f"{args.log_dir}: the monitor has not logged a step yet")
    path = write_page(h, args.out, title=args.title or f"daam_fast monitor: {os.path.basename(os.path.abspath(args.log_dir))}")
    print(f"monitor page: {len(h.names)} probe images, {len(h)} steps, {len(h.alerts)} alerts -> {path}")
    return EXIT_OK


def add_cli(sub) -> None:
    """Register ``daam-fast monitor view``."""
    p = sub.add_parser("monitor", help="pages of the attention monitor's runs (daam_fast.monitor)")
    msub = p.add_subparsers(dest="monitor_command", metavar="ACTION")
    v = msub.add_parser("view", help="LOG_DIR of an AttentionMonitor -> one self-contained HTML page")
    v.add_argument("log_dir", help="the monitor's log_dir (holding daam_monitor/)")
    v.add_argument("--out", required=True, help="the .html file to write")
    v.add_argument("--title", default=None, help="the page's title (default: from LOG_DIR)")
    add_overwrite(v, "replace --out if it exists")
    v.set_defaults(func=_cmd_view)
    p.set_defaults(func=lambda a: (p.print_help(), EXIT_USAGE)[1])
