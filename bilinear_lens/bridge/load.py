"""``load_bridge``: the TransformerBridge counterpart of :func:`bilinear_lens.load_pretrained`.

``load_bridge(src)`` is ``TransformerBridge.boot_transformers(src)`` (a Llama folder, a folder in the
authors' published format, or a Hugging Face name), quietly, followed by
``enable_compatibility_mode()`` unless ``processing=False``: the same processing as
``load_pretrained(src)`` (``fold_ln``, centring), so ``blocks.L.mlp.hook_in`` is ``ln2``'s
normalised input without its weight, which lives in ``W_in``/``W_gate`` (``[d_model, d_mlp]``). It is
how commands load models on TransformerLens 4.x, which has no ``HookedTransformer``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional, Union

import torch

from bilinear_lens.checkpoints.hf_config import CheckpointError


def load_bridge(src: Union[str, Path], processing: bool = True, device: Optional[str] = None,
                dtype: torch.dtype = torch.float32, tokenizer: Any = None, scale_attn: Optional[bool] = None) -> Any:
    """A ``TransformerBridge`` of ``src`` in eval mode, in compatibility mode unless ``processing=False``.

    A local folder without tokenizer files (and not in the authors' format, which finds its own)
    needs ``tokenizer=``: ``boot_transformers`` cannot load a model without one.
    """
    from transformer_lens.model_bridge import TransformerBridge

    from bilinear_lens.checkpoints.authors import is_authors_folder
    from bilinear_lens.checkpoints.authors_tokenizer import has_tokenizer_files
    from bilinear_lens.registration import register

    register()
    path = Path(str(src)).expanduser()
    if path.is_file():
        raise CheckpointError(f"{src} is a file; pass a model folder (config.json and model.safetensors) or a name.")
    if tokenizer is None and path.is_dir() and not is_authors_folder(path) and not has_tokenizer_files(path):
        raise CheckpointError(f"{src} has no tokenizer files, and TransformerBridge.boot_transformers needs a "
                              "tokenizer; save the tokenizer into the folder or pass tokenizer=.")
    kwargs = {"scale_attn": scale_attn} if scale_attn is not None else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        bridge = TransformerBridge.boot_transformers(str(src), device=device, dtype=dtype, tokenizer=tokenizer,
                                                     **kwargs)
        if processing:
            bridge.enable_compatibility_mode()
    return bridge.eval()


__all__ = ["load_bridge"]
