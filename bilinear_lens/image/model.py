"""A bilinear image classifier with TransformerLens hook points at every step.

    x0  = W_e x                                   pixels [batch, 784] -> [batch, d]   (hook_embed)
    x_{L+1} = B_L(x_L) (+ x_L if residual)        B_L a BilinearMLP d -> d            (hook_resid_{L})
    logits = W_U x_n                              [batch, d] -> [batch, n_classes]    (hook_logits)

with ``B_L(x) = W_out^T((W_gate^T x + b_gate) * (W_in^T x + b_in)) + b_out`` (biases frozen at 0
unless ``bias=True``). Training-only regularisation as in the paper (notes §1.3): input noise
``x + sigma * N(0, 1)`` on pixels in [0, 1] and latent noise ``x + s * x.std() * N(0, 1)`` after
every bilinear layer (``x.std()`` over the whole batch tensor, detached); weight decay lives in
the optimiser (:mod:`bilinear_lens.image.train`).

Every bilinear layer is a :class:`~bilinear_lens.BilinearMLP`, exposed by :meth:`bilinear_layers`,
so the shared decomposition API works unchanged: ``eigendecompose(clf, layer, clf.head.weight)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformer_lens import HookedRootModule  # (kept in TransformerLens 4)
from transformer_lens.hook_points import HookPoint

from bilinear_lens.checkpoints.target import check_model_target, write_marker
from bilinear_lens.config import Config, option
from bilinear_lens.runs import atomic_dir, require_finite
from bilinear_lens.components.bilinear_mlp import BilinearMLP

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class ClassifierConfig(Config):
    """Architecture and training-time noise of a :class:`BilinearClassifier`.

    ``input_noise``: std of Gaussian noise added to pixels (in [0, 1]) while training.
    ``latent_noise``: ``s`` in ``x + s * x.std() * N(0, 1)`` after every bilinear layer (training).
    """

    d_hidden: int = option(256, "embedding / bilinear width d", minimum=1)
    n_layers: int = option(1, "bilinear layers", minimum=1)
    n_classes: int = option(10, "classes", minimum=1)
    image_size: int = option(28, "image side in pixels", minimum=1)
    residual: bool = option(False, "residual connections around the bilinear layers")
    bias: bool = option(False, "train the bilinear layers' biases")
    input_noise: float = option(0.0, "std of Gaussian pixel noise while training", minimum=0)
    latent_noise: float = option(0.0, "s of the latent noise while training", minimum=0)

    @property
    def d_input(self) -> int:
        return self.image_size * self.image_size


class BilinearClassifier(HookedRootModule):
    """Embedding -> bilinear layer(s) -> head, all linear maps without bias (see module docstring).

    Hook points: ``hook_input`` (pixels, after input noise) ``[batch, 784]``, ``hook_embed``
    ``[batch, d]``, per layer ``layers.{L}.hook_in/hook_pre/hook_pre_linear/hook_post/hook_eig``
    (from :class:`BilinearMLP`) and ``hook_resid_{L}`` (the stream after layer ``L``: the layer's
    output, plus its input when ``residual``), ``hook_logits`` ``[batch, n_classes]``.
    """

    def __init__(self, cfg: Union[ClassifierConfig, Dict[str, Any], None] = None, **overrides: Any):
        super().__init__()
        if cfg is None:
            cfg = ClassifierConfig(**overrides)
        elif isinstance(cfg, dict):
            cfg = ClassifierConfig.from_dict({**cfg, **overrides})
        elif overrides:
            cfg = ClassifierConfig.from_dict({**cfg.to_dict(), **overrides})
        self.cfg = cfg.check()
        d = cfg.d_hidden
        self.embed = nn.Linear(cfg.d_input, d, bias=False)
        self.layers = nn.ModuleList([BilinearMLP.from_dims(d, d) for _ in range(cfg.n_layers)])
        if not cfg.bias:
            for mlp in self.layers:
                for b in (mlp.b_in, mlp.b_gate, mlp.b_out):
                    b.requires_grad_(False)
        self.head = nn.Linear(d, cfg.n_classes, bias=False)
        self.hook_input = HookPoint()
        self.hook_embed = HookPoint()
        for L in range(cfg.n_layers):
            setattr(self, f"hook_resid_{L}", HookPoint())
        self.hook_logits = HookPoint()
        self.setup()

    # -- structure -------------------------------------------------------------------------------
    def bilinear_layers(self) -> List[BilinearMLP]:
        """The bilinear layers, in order (what the decomposition API reads)."""
        return list(self.layers)

    @property
    def W_e(self) -> Float[Tensor, "d_hidden d_input"]:
        """Embedding matrix ``W_e`` (``embed.weight``), ``[d, 784]``."""
        return self.embed.weight

    @property
    def W_U(self) -> Float[Tensor, "n_classes d_hidden"]:
        """Head matrix (``head.weight``); its rows are the natural output directions."""
        return self.head.weight

    # -- forward ---------------------------------------------------------------------------------
    def _flatten(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.cfg.d_input:
            if x.shape[-2:] == (self.cfg.image_size, self.cfg.image_size):
                x = x.reshape(*x.shape[:-2], self.cfg.d_input)
            else:
                raise ValueError(
                    f"expected images of {self.cfg.image_size}x{self.cfg.image_size} pixels "
                    f"([..., {self.cfg.image_size}, {self.cfg.image_size}] or [..., {self.cfg.d_input}]), "
                    f"got shape {tuple(x.shape)}."
                )
        return x.to(self.embed.weight.dtype)

    def embed_pixels(self, x: Float[Tensor, "... d_input"]) -> Float[Tensor, "... d_hidden"]:
        """``W_e x``: pixels -> the input space of layer 0 (no noise, no hooks)."""
        return self.embed(self._flatten(x))

    def forward(self, x: Float[Tensor, "batch ..."]) -> Float[Tensor, "batch n_classes"]:
        """Logits for images ``x`` (``[batch, 28, 28]`` or ``[batch, 784]``, pixels in [0, 1])."""
        x = self._flatten(x)
        if self.training and self.cfg.input_noise > 0:
            x = x + self.cfg.input_noise * torch.randn_like(x)
        x = self.hook_input(x)
        h = self.hook_embed(self.embed(x))
        for L, mlp in enumerate(self.layers):
            out = mlp(h)
            h = h + out if self.cfg.residual else out
            if self.training and self.cfg.latent_noise > 0:
                h = h + self.cfg.latent_noise * h.detach().std() * torch.randn_like(h)
            h = getattr(self, f"hook_resid_{L}")(h)
        return self.hook_logits(self.head(h))

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 4096) -> Tensor:
        """Class predictions ``argmax logits`` in eval mode, batched."""
        was_training = self.training
        self.eval()
        try:
            return torch.cat([self(x[i:i + batch_size]).argmax(-1) for i in range(0, len(x), batch_size)])
        finally:
            self.train(was_training)

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: Union[str, Path], extra: Optional[Dict[str, Any]] = None, overwrite: bool = False) -> Path:
        """Write ``config.json`` + ``model.safetensors`` into folder ``path`` atomically.

        ``path`` must be new, empty, or (with ``overwrite=True``) a classifier folder saved here before
        (marked by ``.bilinear-lens-model``, :mod:`bilinear_lens.checkpoints.target`); a file or another
        non-empty folder is refused and left as it was.
        """
        path = check_model_target(path, overwrite, "BilinearClassifier.save")
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with atomic_dir(path) as tmp:
            tmp = Path(tmp)
            save_file(state, str(tmp / WEIGHTS_FILE))
            meta = {"architecture": "BilinearClassifier", "config": self.cfg.to_dict(), **(extra or {})}
            (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
            write_marker(tmp, "classifier")
        return path

    @classmethod
    def load(cls, path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> "BilinearClassifier":
        """Rebuild a classifier saved with :meth:`save` (one call, eval mode).

        Every problem is a one-line ``ValueError`` naming the file: a missing, truncated or corrupt
        ``model.safetensors``, a ``config.json`` that is not a classifier's, a tensor holding NaN or inf.
        """
        path = Path(path)
        config_file, weights_file = path / CONFIG_FILE, path / WEIGHTS_FILE
        if not config_file.is_file() or not weights_file.is_file():
            raise FileNotFoundError(
                f"{path} is not a saved BilinearClassifier: expected {CONFIG_FILE} and {WEIGHTS_FILE} "
                "in it (write one with BilinearClassifier.save(path))."
            )
        meta = cls.read_metadata(path)
        if meta.get("architecture") != "BilinearClassifier" or not isinstance(meta.get("config"), dict):
            raise ValueError(f"{config_file} describes {meta.get('architecture')!r}, not a BilinearClassifier "
                             "(expected keys 'architecture' and 'config').")
        try:
            model = cls(ClassifierConfig.from_dict(meta["config"]))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{config_file}: invalid classifier config ({str(err).splitlines()[0]}).") from err
        try:
            tensors = load_file(str(weights_file), device="cpu")
        except Exception as err:  # truncated or not safetensors
            raise ValueError(f"{weights_file} cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:100]}); "
                             "it is truncated or corrupt: save the model again.") from err
        require_finite(tensors, str(weights_file), "save a finite model again")
        try:
            model.load_state_dict(tensors)
        except RuntimeError as err:
            raise ValueError(f"{weights_file} does not match {config_file} ({str(err).splitlines()[0][:120]}); "
                             "save the model again.") from err
        return model.to(device).eval()

    @staticmethod
    def read_metadata(path: Union[str, Path]) -> Dict[str, Any]:
        """The ``config.json`` of a saved classifier (config plus any ``extra`` given to save)."""
        file = Path(path) / CONFIG_FILE
        try:
            meta = json.loads(file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{file} is not valid JSON ({type(err).__name__}); save the model again.") from err
        if not isinstance(meta, dict):
            raise ValueError(f"{file} holds a {type(meta).__name__}, not a JSON object; save the model again.")
        return meta


def eigenvector_pixels(
    model: BilinearClassifier, vectors: Float[Tensor, "... d"]
) -> Float[Tensor, "... d_input"]:
    """Layer-0 eigenvectors in pixel space: ``W_e^T v`` (``[..., d]`` -> ``[..., 784]``).

    With branch biases the decomposition works on ``[x, 1]`` (``d = d_hidden + 1``); the last
    coordinate is a constant offset, not a pixel pattern, and is dropped here (use
    :func:`pixel_activations` for exact activations).
    """
    d = model.cfg.d_hidden
    if vectors.shape[-1] not in (d, d + 1):
        raise ValueError(f"eigenvectors have {vectors.shape[-1]} coordinates; layer-0 eigenvectors of this "
                         f"classifier have {d} (or {d + 1} with branch biases).")
    W_e = model.W_e.detach().to(vectors.dtype)
    return vectors[..., :d] @ W_e


def pixel_activations(
    model: BilinearClassifier, values: Float[Tensor, "n k"], vectors: Float[Tensor, "n k d"],
    images: Float[Tensor, "batch ..."],
) -> Float[Tensor, "batch n k"]:
    """``lambda_i ((W_e^T v_i) . x + c_i)^2`` on raw pixels (``c_i`` the homogeneous coordinate, 0
    without branch biases); equals ``eig.activations(W_e x)`` for layer-0 eigenvectors."""
    pix = eigenvector_pixels(model, vectors)  # [n, k, 784]
    x = model._flatten(images).to(pix.dtype)
    proj = torch.einsum("bp,nkp->bnk", x, pix)
    if vectors.shape[-1] == model.cfg.d_hidden + 1:
        proj = proj + vectors[..., -1]
    return values * proj**2


def count_parameters(model: BilinearClassifier) -> Tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
