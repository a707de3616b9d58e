"""The shared report shell: one stylesheet, escaped text, written whole or not at all."""

from __future__ import annotations

import pytest

from bilinear_lens.reports.page import CSS, figure_html, page, table_html, write_page


def test_page_escapes_text_and_carries_the_stylesheet():
    html = page("a <b> & c", table_html([["<x>", 1.5]], header=("k", "v")) + figure_html("f.png", "F<", "cap&"))
    assert html.startswith("<!doctype html>") and CSS in html
    assert "<h1>a &lt;b&gt; &amp; c</h1>" in html and "<td>&lt;x&gt;</td>" in html
    assert "<img src='f.png' alt='F&lt;'>" in html and "<figcaption>cap&amp;</figcaption>" in html
    assert "<h1>" not in page("t", "body", heading=False)


def test_write_page_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "index.html"
    path.write_text("old")
    import bilinear_lens.runs.atomic as atomic

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError):
        write_page(path, "t", "b")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["index.html"]
    monkeypatch.undo()
    write_page(path, "t", "new body")
    assert "new body" in path.read_text()
