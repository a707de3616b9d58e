"""Demo: the eigenvector atlas of a small bilinear TinyStories model, with browser screenshots.

1. trains (or reuses, or resumes) a bilinear language model with ``bilinear-lens train-lm`` on the
   offline TinyStories text (defaults: d_model 128, 2 layers, 4 heads, d_mlp 512, vocab 4096,
   context 128, ``--tokens`` 400,000: 2.5 minutes on one thread of the shared 2-core VM, val loss 4.15);
2. builds the atlas of layer 1 over the whole vocabulary, top-8, with top contexts from 256 rows of
   the validation text (``bilinear-lens atlas``, resumable);
3. opens ``OUT/atlas/index.html`` in headless chromium and writes screenshots (``--figures``).

    python demos/atlas_tinystories.py --out runs/atlas_demo --figures docs/figures
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinystories"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def train(out: Path, data: Path, tokens: int) -> Path:
    from bilinear_lens.cli import main

    lm = out / "lm"
    done = (lm / "model" / "model.safetensors").is_file()
    if not done:
        argv = ["train-lm", "--data", str(data / "train.txt"), "--val-data", str(data / "validation.txt"),
                "--out", str(lm), "--tokens", str(tokens)]
        if (lm / "run.json").is_file():
            argv.append("--resume")
        if main(argv) != 0:
            sys.exit("train-lm failed")
    return lm / "model"


def build(model: Path, out: Path, data: Path, rows: int) -> Path:
    from bilinear_lens.cli import main

    atlas = out / "atlas"
    argv = ["atlas", "--model", str(model), "--layer", "1", "--out", str(atlas), "--k", "8",
            "--data", str(data / "validation.txt"), "--rows", str(rows)]
    if (atlas / "run.json").is_file():
        argv.append("--resume")
    if main(argv) != 0:
        sys.exit("atlas failed")
    return atlas


def screenshots(atlas: Path, figures: Path, token: str) -> list:
    from playwright.sync_api import sync_playwright

    from bilinear_lens.atlas import Atlas

    a = Atlas.load(atlas)
    i = a.for_token(token)
    figures.mkdir(parents=True, exist_ok=True)
    shots, errors = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto((atlas / "index.html").resolve().as_uri())
        page.wait_for_selector(".card")
        shots.append(figures / "atlas_overview.png")
        page.screenshot(path=str(shots[-1]))
        page.fill("#search", token.strip())
        page.locator("#list li").first.click()
        page.wait_for_timeout(300)
        page.locator("#card-0").click()
        page.wait_for_selector("#card-0.open .contexts")
        page.wait_for_timeout(200)
        shots.append(figures / "atlas_card.png")
        page.screenshot(path=str(shots[-1]))
        page.goto("about:blank")  # a new load: the page reads #d=I&e=J when it opens
        page.goto((atlas / "index.html").resolve().as_uri() + f"#d={i}&e=1")
        page.wait_for_selector("#card-1.open")
        page.locator("#card-1").scroll_into_view_if_needed()
        shots.append(figures / "atlas_contexts.png")
        page.locator("#card-1").screenshot(path=str(shots[-1]))
        browser.close()
    if errors:
        sys.exit(f"console errors: {errors}")
    return [str(s) for s in shots]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/atlas_demo")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--tokens", type=int, default=400_000, help="training tokens")
    ap.add_argument("--rows", type=int, default=256, help="validation rows (128 tokens) for contexts")
    ap.add_argument("--token", default=" happy", help="token whose direction the screenshots show")
    ap.add_argument("--figures", default=None, help="folder for the screenshots (skipped when not given)")
    args = ap.parse_args()
    out, data = Path(args.out), Path(args.data)
    model = train(out, data, args.tokens)
    atlas = build(model, out, data, args.rows)
    summary = {"model": str(model), "atlas": str(atlas), "page": str(atlas / "index.html")}
    metrics = out / "lm" / "metrics.json"
    if metrics.is_file():
        summary["val_loss"] = json.loads(metrics.read_text()).get("val_loss")
    if args.figures:
        summary["screenshots"] = screenshots(atlas, Path(args.figures), args.token)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
