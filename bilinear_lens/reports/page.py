"""The HTML shell of every report (``mnist``, the sweeps, ``compare``): one stylesheet, self-contained pages.

    write_page(path, title, body_html)      <!doctype html> ... <style>CSS</style> ... <h1>title</h1> body
    figure_html(src, heading, caption)      <figure><h2>heading</h2><img src=...><figcaption>caption</figcaption>
    table_html(rows, header)                <table> with the first column left-aligned

Pages are written atomically (:func:`bilinear_lens.runs.write_text`), so a report is whole or absent.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from bilinear_lens.runs.atomic import write_text

__all__ = ["CSS", "esc", "figure_html", "page", "table_html", "write_page"]

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em} td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child,td.l,th.l{text-align:left}
figure{margin:2em 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.92em;color:#444;max-width:900px}
code{background:#f4f4f4;padding:1px 4px}
.ctx{font-family:ui-monospace,monospace;font-size:.85em;white-space:pre-wrap;margin:.15em 0;padding:.2em .4em;background:#fafafa;border-left:3px solid #ddd}
.ctx .c{outline:1.5px solid #000;font-weight:bold}
.cols{display:flex;gap:1.2em} .cols>div{flex:1;min-width:0}
.eig{border:1px solid #e4e4e4;border-radius:6px;padding:.5em .8em;margin:.8em 0}
.note{color:#555;font-size:.9em} img{max-width:100%}
"""


def esc(value: Any) -> str:
    """HTML-escaped ``str(value)``."""
    return html.escape(str(value))


def figure_html(src: str, heading: str, caption: str = "") -> str:
    """A figure with its heading and caption (``src`` relative to the page)."""
    return (f"<figure><h2>{esc(heading)}</h2><img src='{esc(src)}' alt='{esc(heading)}'>"
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def table_html(rows: Sequence[Sequence[Any]], header: Optional[Sequence[Any]] = None) -> str:
    """A table of escaped cells."""
    head = "<tr>" + "".join(f"<th>{esc(c)}</th>" for c in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def page(title: str, body: str, heading: bool = True) -> str:
    """The whole page: the shared stylesheet, ``<h1>title</h1>`` (unless ``heading=False``), ``body``."""
    h1 = f"<h1>{esc(title)}</h1>" if heading else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body>{h1}\n{body}\n</body></html>\n")


def write_page(path: Union[str, Path], title: str, body: str, heading: bool = True) -> Path:
    """:func:`page` written to ``path`` atomically."""
    return write_text(path, page(title, body, heading))
