"""The atlas page in a real headless browser (Debian's chromium driven by Playwright), opened from disk."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def _browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; the dev extra has it)")
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    return sync_playwright


@pytest.fixture(scope="module")
def atlas_dir(tmp_path_factory):
    """An atlas of a random bilinear Llama folder, loaded as the atlas command loads it (TransformerLens 3.x:
    HookedTransformer, 4.x: TransformerBridge)."""
    from tests.integration.atlas.test_atlas import model_folder

    from bilinear_lens.atlas import build_atlas
    from bilinear_lens.atlas.cli import load_source

    root = tmp_path_factory.mktemp("atlas_page")
    model, tok = load_source(str(model_folder(root / "model")), "cpu")
    rng = random.Random(1)
    data = root / "text.txt"
    data.write_text("".join(" ".join(f"w{rng.randint(3, 96)}" for _ in range(40)) + "\n<|endoftext|>\n"
                            for _ in range(20)), encoding="utf-8")
    build_atlas(model, 1, str(root / "atlas"), k=4, data=str(data), batch=32, rows=8, ctx=32, tokenizer=tok,
                progress=False, source="tiny-test-model")
    return root / "atlas"


def test_page_search_open_card_and_values(atlas_dir):
    sync_playwright = _browser_or_skip()
    from bilinear_lens.atlas import Atlas

    atlas = Atlas.load(atlas_dir)
    i = atlas.for_token("w42")
    ent = atlas.entry(i)
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((atlas_dir / "index.html").resolve().as_uri())
        page.wait_for_selector("#list li")
        assert page.locator("#count").inner_text().endswith(f"of {len(atlas)} directions")
        page.fill("#search", "w42")
        first = page.locator("#list li").first
        assert first.inner_text().strip().endswith("w42")
        first.click()
        page.wait_for_function("document.getElementById('dlabel') && document.getElementById('dlabel').textContent === 'w42'")
        # the spectrum has one bar per eigenvalue, coloured by sign
        bars = page.locator("#spectrum rect")
        assert bars.count() == atlas.k
        for e in range(atlas.k):
            assert bars.nth(e).get_attribute("fill") == ("#2563eb" if ent["values"][e] >= 0 else "#dc2626")
        assert page.locator("#stat-lowrank").inner_text() == f"{float(ent['low_rank']):.4f}"
        # open eigenvector #2: its lambda, token decodings and contexts come from the data files
        page.locator("#card-1").click()
        page.wait_for_selector("#card-1.open .contexts")
        lam = float(ent["values"][1])
        shown = page.locator("#card-1 .lamv").inner_text().replace("\u2212", "-")
        assert shown == f"{lam:+.4f}"
        chips = page.locator("#card-1 .sub").first.locator(".chip")
        assert chips.count() == ent["tokens.direct.ids"].shape[1]
        assert chips.first.inner_text().startswith(atlas.index["labels"][int(ent["tokens.direct.ids"][1, 0])])
        ctx = page.locator("#card-1 .ctx")
        assert ctx.count() == ent["contexts.act"].shape[1]
        peak = float(ctx.first.locator(".a").inner_text().replace("\u2212", "-"))
        assert peak == pytest.approx(float(ent["contexts.act"][1, 0]), rel=2e-3)
        assert page.locator("#card-1 .ctx .t.peak").count() >= 1
        assert "d=%d&e=1" % i in page.url
        # ranking: the list is ordered by low-rankness when the search is cleared
        page.fill("#search", "")
        top = page.locator("#list li").first.get_attribute("data-i")
        assert int(top) == atlas.rank(by="low_rank")[0]
        browser.close()
    assert errors == []
