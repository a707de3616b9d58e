"""What every report shares: the HTML page shell (one stylesheet) and atomic figure files.

* :mod:`~bilinear_lens.reports.page`: ``write_page(path, title, body)``, a self-contained page (inline CSS,
  relative image paths) written atomically; ``figure_html`` for a figure with its heading and caption;
* :mod:`~bilinear_lens.reports.figures`: ``save_figure(fig, path)``, a matplotlib figure written atomically.
"""

from bilinear_lens.reports.page import CSS, esc, figure_html, page, table_html, write_page

__all__ = ["CSS", "esc", "figure_html", "page", "save_figure", "table_html", "write_page"]


def __getattr__(name: str):  # save_figure imports matplotlib: only on use
    if name == "save_figure":
        from bilinear_lens.reports.figures import save_figure

        return save_figure
    raise AttributeError(f"module 'bilinear_lens.reports' has no attribute {name!r}")
