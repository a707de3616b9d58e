"""``index.html`` for an image study: numbers and figures with short captions.

Self-contained (inline CSS, relative image paths), so the output folder can be moved or zipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

from bilinear_lens.reports.page import figure_html, page, table_html
from bilinear_lens.runs.atomic import write_text

CAPTIONS: Dict[str, Tuple[str, str]] = {
    "eigenvectors": (
        "Top eigenvectors per class",
        "For every class c the interaction matrix Q(u_c) of the head row u_c is eigendecomposed; "
        "logit_c = Σ_i λ_i ((W_eᵀv_i)·x)². How the two eigenvectors are chosen: the one with the largest "
        "eigenvalue (most positive λ) and the one with the smallest (most negative λ) of each class, by the "
        "signed value and never by hand (#r: the rank by |λ|). They are drawn as pixel patterns W_eᵀv (red "
        "positive, blue negative, each tile scaled to its own max |value|, see the colour bar), each "
        "followed by the three test images with the largest activation |λ (v·x)²| over the whole test set, "
        "whatever their class: the label under each image is its true class, red when it is another class. "
        "A most-positive eigenvector whose top inputs are other classes (a shape two digits share, such as "
        "the loop of 0 and 9) raises this logit for them too; the other eigenvectors and the other classes' "
        "logits decide the prediction. Signs of eigenvectors are arbitrary: an input matching either the red "
        "or the blue region activates the eigenvector.",
    ),
    "eigenvectors_deep": (
        "Top eigenvectors per class (last layer, drawn approximately)",
        "For every class c the last layer's interaction matrix Q(u_c) is eigendecomposed: logit_c = "
        "Σ_i λ_i (v_i·h)² where h is the input of the last layer, not the pixels, so an eigenvector has no "
        "exact pixel picture. Chosen: the eigenvector with the largest and the smallest signed λ of each class "
        "(#r: the rank by |λ|). Drawn: an illustration (deep_pixels): v is used as the output direction of the "
        "layer below, whose top-|λ| eigenvector is followed down to layer 0 and shown as W_eᵀv' (each tile "
        "scaled to its own max |value|; sign arbitrary). The top test images are exact: the largest |λ (v·h)²|, "
        "labelled with their true class (red: another class). The exact reading is the tree below.",
    ),
    "eigenvectors_residual": (
        "Top eigenvectors per class (last layer, direct path)",
        "For every class c the last layer's interaction matrix Q(u_c) is eigendecomposed: logit_c = u_c·h + "
        "Σ_i λ_i (v_i·h)² with h the input of the last layer. With residual connections h contains W_e x "
        "itself, so the pictures are the direct-path patterns W_eᵀv (exact only for one layer). Chosen: the "
        "largest and the smallest signed λ of each class (#r: rank by |λ|); each tile scaled to its own "
        "max |value|; top test images by |λ (v·h)²|, labelled with their true class (red: another class).",
    ),
    "spectra": (
        "Eigenvalue spectra",
        "Left: the top eigenvalues of each class's interaction matrix (rows), ordered by |λ|, coloured by the "
        "signed value (colour bar). Right: |λ| against rank on a log scale. A few eigenvectors carry most of "
        "each logit; the rest are close to zero.",
    ),
    "truncation": (
        "Truncation",
        "Test accuracy when each class logit keeps only its top-k eigenvectors by |λ| "
        "(logit_c ≈ Σ_{i≤k} λ_i (v_i·x)², applied with truncated_mlp). k = 0 removes the bilinear layer's "
        "output along the head rows.",
    ),
    "hosvd": (
        "HOSVD components",
        "SVD of the class-output tensor: each component s is an output pattern over classes (σ_s a_s, left) "
        "times one interaction matrix Q_s, whose most positive and most negative eigenvectors are drawn in "
        "pixels. These are the directions the layer uses most, with no class chosen in advance.",
    ),
    "tree": (
        "Eigenvector tree (two layers)",
        "For the first classes only: each row is one top eigenvector v of the last layer, named in the left "
        "column (text: class, rank, λ). v reads a direction of layer 0's output; using v as layer 0's output "
        "direction gives Q_0(v), whose top eigenvectors are the pictures in that row (pixels W_eᵀv', each "
        "scaled to its own max |value|). The whole tree: bilinear_lens.eigen_tree in Python.",
    ),
    "training": ("Training", "Training loss (with noise) and test accuracy per epoch."),
}

def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * float(x):.2f}%"


def _rows(metrics: Dict[str, Any]) -> List[Tuple[str, str]]:
    cfg = metrics["config"]["model"]
    tr = metrics["config"]["train"]
    curve = metrics["truncation"]
    at = dict(zip(curve["k"], curve["accuracy"]))
    rows = [
        ("dataset", f"{metrics['dataset']} ({metrics['source']})"),
        ("train / test images", f"{metrics['n_train']:,} / {metrics['n_test']:,}"),
        ("model", f"{cfg['n_layers']} bilinear layer(s), d={cfg['d_hidden']}, residual={cfg['residual']}"),
        ("regularisation", f"input noise {cfg['input_noise']}, latent noise {cfg['latent_noise']}, "
                           f"weight decay {tr['weight_decay']}"),
        ("training", f"{tr['epochs']} epochs, batch {tr['batch_size']}, AdamW lr {tr['lr']}, seed {tr['seed']}"),
        ("test accuracy", _pct(metrics["test_accuracy"])),
        ("train accuracy", _pct(metrics.get("train_accuracy"))),
    ]
    for k in (1, 2, 5, 10, 20, 30):
        if k in at:
            rows.append((f"accuracy, top {k} eigenvectors per class", _pct(at[k])))
    sec = metrics.get("seconds", {})
    dec = sec.get("decomposition", {})
    if dec:
        rows.append(("decomposition time", f"{dec.get('total', 0):.2f} s (eigendecompose "
                                           f"{dec.get('eigendecompose', 0):.2f} s, HOSVD {dec.get('hosvd', 0):.2f} s)"))
    if sec.get("train") is not None:
        rows.append(("training time", f"{sec['train']:.1f} s"))
    if "unregularised" in metrics:
        u = metrics["unregularised"]
        rows.append(("unregularised model: test accuracy", _pct(u["test_accuracy"])))
        uat = dict(zip(u["truncation"]["k"], u["truncation"]["accuracy"]))
        if 20 in uat:
            rows.append(("unregularised model: top 20 per class", _pct(uat[20])))
    return rows


def render_index(metrics: Dict[str, Any]) -> str:
    """The HTML text of the report for ``metrics`` (as written to ``metrics.json``)."""
    title = f"Bilinear classifier on {metrics['dataset']}: weight-based decomposition"
    parts = ["<p>A bilinear layer computes <code>W_out((W_gate x)⊙(W_in x))</code>, so each class logit is an "
             "exact quadratic form of the embedded image, <code>logit_c = xᵀQ_c x = Σ_i λ_i (v_i·x)²</code>, "
             "read off the weights (no data needed for the decomposition; data only picks example inputs).</p>",
             table_html(_rows(metrics), header=("quantity", "value")),
             "<p>All numbers: <a href='metrics.json'>metrics.json</a>; model: <code>"
             "BilinearClassifier.load('model')</code>.</p>"]
    model = metrics["config"]["model"]
    variant = "" if model["n_layers"] == 1 else "_residual" if model.get("residual") else "_deep"
    for key, rel in metrics.get("figures", {}).items():
        head, text = CAPTIONS.get(key + variant, CAPTIONS.get(key, (key, "")))
        parts.append(figure_html(rel, head, text))
    return page(title, "\n".join(parts))


def write_index(out: Path, metrics: Dict[str, Any]) -> Path:
    """Write ``out/index.html`` atomically."""
    return write_text(Path(out) / "index.html", render_index(metrics))
