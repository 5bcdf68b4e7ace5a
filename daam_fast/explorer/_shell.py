"""The shell of a self-contained page, shared by the explorer's page and the monitor's
(:mod:`daam_fast.monitor.view`): the head (a Content-Security-Policy that allows no network),
the page's own body, style and script inline, and its data as one JSON script element."""
from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any

__all__ = ["asset", "standalone_page"]


def asset(package: str, name: str) -> str:
    """The text of the file ``name`` shipped in ``package`` (declared in pyproject's package-data)."""
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def standalone_page(body: str, css: str, js: str, title: str, data: Any, data_id: str) -> str:
    """One HTML document with everything inline.

    Args:
        body: the HTML inside ``<body>``, before the scripts; ``__TITLE__`` in it stands for the title.
        css: the style.  js: the script, run after the body.
        title: the page's title (escaped here).
        data: JSON-serialisable (no NaN); the script reads it from the element ``data_id``.
        data_id: the id of the ``<script type="application/json">`` element holding ``data``.
    """
    blob = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")   # no </script>, <!--
    page = asset(__package__, "shell.html").replace("<!--__BODY__-->\n", body).replace("__DATA_ID__", data_id)
    return (page.replace("/*__CSS__*/", css)
                .replace("/*__JS__*/", js)
                .replace("__TITLE__", html.escape(str(title)))
                .replace("__DATA__", blob))
