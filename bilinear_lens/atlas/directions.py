"""Output directions of an atlas: what each decomposed direction ``u`` reads from the MLP's output.

The logit of token ``t`` is ``W_U[:, t] . (w_f * x / rms(x))`` (``w_f``: the final norm's weight;
after ``from_pretrained`` it is folded into ``W_U`` and ``w_f = 1``). Shifting every logit by the
same amount changes nothing after the softmax, so the direction that raises token ``t`` is

    u_t = w_f * (W_U[:, t] - mean_t' W_U[:, t'])                          [d_model]

and ``u_t . MLP(x) = x'^T Q(u_t) x'`` is the MLP's direct effect on ``t``'s centred logit before the
final norm's ``1 / rms`` (the same for every token of a position). Specs (``--directions``):

* ``vocab``: ``u_t`` for every token ``t`` (``[d_vocab, d_model]``), the default;
* ``tokens:FILE``: one token per line (the token's text, or ``#ID`` for a token id);
* ``sae:DIR``: the encoder columns ``W_enc[:, f]`` of a SAELens SAE on the MLP output (what feature
  ``f`` reads), one direction per feature;
* ``diff:A,B``: ``w_f * (W_U[:, A] - W_U[:, B])`` (the logit difference ``A - B``), tokens as text
  or ``#ID``.

Each spec gives ``(directions [n, d_model], labels [n], kind, ids [n])``: ``ids`` are token ids,
feature indices, or ``-1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

from torch import Tensor

from bilinear_lens.runs import RunError


@dataclass
class Directions:
    """``vectors [n, d_model]``, ``labels`` (display text), ``kind`` (vocab/tokens/sae/diff), ``ids``."""

    vectors: Tensor
    labels: List[str]
    kind: str
    ids: List[int]

    def __len__(self) -> int:
        return self.vectors.shape[0]


def final_norm_weight(model: Any) -> Optional[Tensor]:
    """The final norm's weight ``w_f`` if the model keeps one (not folded into ``W_U``), else None."""
    ln = getattr(model, "ln_final", None)
    w = getattr(ln, "w", None)
    return None if w is None else w.detach()


def unembedding(model: Any) -> Tensor:
    """``W_U`` ``[d_model, d_vocab]`` with the final norm's weight applied to its rows."""
    W_U = getattr(model, "W_U", None)
    if W_U is None:
        raise RunError(f"{type(model).__name__} has no W_U; vocabulary directions need a language model.")
    W_U = W_U.detach()
    w_f = final_norm_weight(model)
    return W_U if w_f is None else w_f.to(W_U)[:, None] * W_U


def token_label(tokenizer: Any, t: int) -> str:
    """Display text of token ``t`` (``<t>`` without a tokenizer)."""
    if tokenizer is None:
        return f"<{t}>"
    return tokenizer.decode([t])


def token_id(tokenizer: Any, text: str, d_vocab: int) -> int:
    """A token id from ``#ID`` or the token's text (exactly one token, or a one-line error)."""
    if text.startswith("#") and text[1:].isdigit():
        t = int(text[1:])
    else:
        if tokenizer is None:
            raise RunError(f"token {text!r}: the model has no tokenizer; give token ids as #ID.")
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise RunError(f"{text!r} is {len(ids)} tokens {ids}, not one; pass a single token or #ID.")
        t = ids[0]
    if not 0 <= t < d_vocab:
        raise RunError(f"token id {t} is outside the vocabulary (0..{d_vocab - 1}).")
    return t


def vocab_directions(model: Any, tokenizer: Any, ids: Optional[List[int]] = None) -> Directions:
    """``u_t`` for the given token ids (all tokens by default)."""
    W_U = unembedding(model)
    centred = W_U - W_U.mean(1, keepdim=True)
    ids = list(range(W_U.shape[1])) if ids is None else ids
    labels = [token_label(tokenizer, t) for t in ids]
    return Directions(centred[:, ids].T.contiguous(), labels, "vocab" if len(ids) == W_U.shape[1] else "tokens", ids)


def _read_lines(path: str) -> List[str]:
    p = Path(path)
    if not p.is_file():
        raise RunError(f"token file {p} does not exist; give one token per line.")
    lines = [line.rstrip("\n") for line in p.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line.strip() != ""]
    if not lines:
        raise RunError(f"token file {p} is empty; give one token per line.")
    return lines


def sae_lens_sae(flag: str) -> Any:
    """SAELens' ``SAE`` class, or a one-line :class:`RunError` for ``flag`` when SAELens is not installed."""
    try:
        from sae_lens import SAE
    except ImportError:
        raise RunError(f"{flag} reads a SAELens SAE folder, and SAELens is not installed (it needs TransformerLens "
                       "3.9: pip install 'sae-lens>=6.5' 'transformer-lens>=3.9,<3.10'); drop the option.") from None
    return SAE


def sae_directions(path: str, d_model: int) -> Directions:
    """The encoder columns of a SAELens SAE folder (``SAE.load_from_disk``)."""
    if not Path(path).is_dir():
        raise RunError(f"SAE folder {path} does not exist; train one with bilinear-lens train-sae.")
    sae = sae_lens_sae("--directions sae:DIR").load_from_disk(path, device="cpu")
    W_enc = sae.W_enc.detach()
    if W_enc.shape[0] != d_model:
        raise RunError(f"the SAE in {path} reads width {W_enc.shape[0]}, but the MLP output has d_model={d_model}.")
    n = W_enc.shape[1]
    return Directions(W_enc.T.contiguous(), [f"feature {f}" for f in range(n)], "sae", list(range(n)))


def check_spec(spec: str) -> str:
    """``spec`` if it has the form of a ``--directions`` spec (before any model is loaded)."""
    kind, _, arg = spec.partition(":")
    if (kind == "vocab" and not arg) or (kind in ("tokens", "sae") and arg) or (kind == "diff" and arg.count(",") == 1):
        return spec
    raise RunError(f"--directions {spec!r} is not one of vocab, tokens:FILE, sae:DIR, diff:A,B.")


def parse_directions(spec: str, model: Any, tokenizer: Any) -> Directions:
    """Directions for a ``--directions`` spec (module docstring); one-line errors for bad specs."""
    kind, _, arg = check_spec(spec).partition(":")
    if kind == "vocab" and not arg:
        return vocab_directions(model, tokenizer)
    d_vocab = getattr(getattr(model, "cfg", None), "d_vocab", None) or unembedding(model).shape[1]
    if kind == "tokens" and arg:
        return vocab_directions(model, tokenizer, [token_id(tokenizer, t, d_vocab) for t in _read_lines(arg)])
    if kind == "sae" and arg:
        return sae_directions(arg, model.cfg.d_model)
    if kind == "diff" and arg.count(",") == 1:
        a, b = (token_id(tokenizer, t, d_vocab) for t in arg.split(","))
        W_U = unembedding(model)
        u = (W_U[:, a] - W_U[:, b])[None]
        return Directions(u, [f"{token_label(tokenizer, a)} - {token_label(tokenizer, b)}"], "diff", [-1])
    raise RunError(f"--directions {spec!r} is not one of vocab, tokens:FILE, sae:DIR, diff:A,B.")
