"""Figure properties a reader relies on: every truncation point inside the axes, readable log ticks,
labelled axes, spectra sorted as their titles say, captions that match the model drawn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bilinear_lens.image import figures
from bilinear_lens.image.report import render_index


def _visible_major_ticks(ax):
    lo, hi = ax.get_ylim()
    return [t for t in ax.yaxis.get_majorticklocs() if lo <= t <= hi]


def test_truncation_axes_include_the_k0_point_and_log_ticks():
    acc = [0.3195] + list(np.linspace(0.6, 0.97, 30))
    fig = figures.draw_truncation({"k": list(range(31)), "accuracy": acc}, 0.9705)
    a1, a2 = fig.axes[:2]
    lo, hi = a1.get_ylim()
    assert lo < 31.95 < hi and lo < 97.05 < hi
    ticks = _visible_major_ticks(a2)
    assert len(ticks) >= 3
    labels = [a2.yaxis.get_major_formatter()(t, i) for i, t in enumerate(ticks)]
    assert all(labels) and len(set(labels)) == len(labels)


@pytest.mark.parametrize("lo,hi", [(2.9, 3.1), (0.05, 0.07), (10, 80)])
def test_log_percent_axis_always_shows_three_ticks(lo, hi):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.semilogy([0, 1], [lo, hi])
    ax.set_ylim(lo, hi)
    figures.log_percent_axis(ax)
    a, b = ax.get_ylim()
    assert a <= lo and b >= hi and len(_visible_major_ticks(ax)) >= 3
    plt.close(fig)


def test_spectra_heatmap_has_a_class_axis_label(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(figures, "save_figure", lambda fig, path, dpi=90: seen.setdefault("fig", fig))
    figures.spectra_figure(torch.randn(3, 12), ["a", "b", "c"], tmp_path / "s.png")
    heat = seen["fig"].axes[0]
    assert "class" in heat.get_ylabel() and "|λ|" in heat.get_xlabel()


def test_sae_spectrum_is_sorted_by_magnitude_and_lowrank_axis_names_both_curves(monkeypatch, tmp_path):
    from bilinear_lens.sae import figures as sf

    seen = []
    monkeypatch.setattr(sf, "_save", lambda fig, path: seen.append(fig))
    vals = np.array([0.1, -0.9, 0.5, -0.2, 0.7])
    sf.interaction_heatmap(np.eye(3), [1, 2, 3], vals, "t", tmp_path / "h.png")
    spectrum = next(ax for ax in seen[0].axes if ax.get_title().startswith("eigenvalues"))
    bars = [p.get_height() for p in spectrum.patches]
    assert bars == sorted(bars, key=abs, reverse=True) and sorted(bars) == sorted(vals.tolist())
    sf.lowrank_curve([1, 2, 4], [0.5, 0.6, 0.7], [0.2, 0.3, 0.4], tmp_path / "c.png")
    label = seen[1].axes[0].get_ylabel()
    assert "Pearson r" in label and "fraction" in label


def _metrics(n_layers, residual=False):
    return {"dataset": "mnist", "source": "x", "n_train": 10, "n_test": 10, "test_accuracy": 0.9,
            "truncation": {"k": [0, 1], "accuracy": [0.1, 0.5]},
            "config": {"model": {"n_layers": n_layers, "residual": residual, "d_hidden": 8, "input_noise": 0,
                                 "latent_noise": 0},
                       "train": {"weight_decay": 0, "epochs": 1, "batch_size": 1, "lr": 1, "seed": 0}},
            "figures": {"eigenvectors": "figures/eigenvectors.png", "tree": "figures/tree.png"}}


def test_eigenvector_caption_matches_the_model_drawn():
    one, two, res = render_index(_metrics(1)), render_index(_metrics(2)), render_index(_metrics(2, True))
    assert "((W_eᵀv_i)·x)²" in one and "never by hand" in one and "another class" in one
    assert "((W_eᵀv_i)·x)²" not in two and "drawn approximately" in two and "deep_pixels" in two
    assert "direct path" in res and "drawn approximately" not in res
