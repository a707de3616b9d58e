"""``Atlas``: read a built atlas lazily, shard by shard.

    atlas = Atlas.load("runs/atlas")
    len(atlas)                      # number of directions
    i = atlas.for_token(" happy")   # index of a token's direction (vocab / tokens atlases)
    i = atlas.for_feature(17)       # index of an SAE feature's direction (sae atlases)
    atlas.rank(by="low_rank")[:10]  # indices, best first (also "lambda1", "energy", "fro")
    atlas.direction(i)              # u [d_model], as eigendecompose takes it
    eig = atlas.eigen(i)            # Eigendecomposition (values [1, k], vectors [1, k, d]) for attach_eigenvectors
    atlas.entry(i)                  # every stored tensor of direction i (readings, contexts)

Only the shards touched are read (cached, at most ``cache`` of them at a time).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor

from bilinear_lens.atlas import store
from bilinear_lens.decomposition.eigen import Eigendecomposition

RANK_KEYS = ("low_rank", "lambda1", "energy", "fro")


class Atlas:
    """A finished atlas folder (see :mod:`bilinear_lens.atlas.store` for the layout)."""

    def __init__(self, root: Path, index: Dict[str, Any], cache: int = 4):
        self.root, self.index, self._cache = root, index, OrderedDict()
        self._cache_size = cache

    @classmethod
    def load(cls, path: Union[str, Path], cache: int = 4) -> "Atlas":
        root = Path(path)
        return cls(root, store.read_index(root), cache)

    # -- shape ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.index["n"])

    @property
    def k(self) -> int:
        return int(self.index["k"])

    @property
    def layer(self) -> int:
        return int(self.index["layer"])

    @property
    def labels(self) -> List[str]:
        return self.index["labels"]

    def __repr__(self) -> str:
        return (f"Atlas({str(self.root)!r}: {len(self)} {self.index['kind']} directions of layer {self.layer}, "
                f"top-{self.k}, {self.index['n_shards']} shards)")

    # -- lookup -----------------------------------------------------------------------------------
    def _check(self, i: int) -> int:
        if isinstance(i, bool) or not isinstance(i, int) or not -len(self) <= i < len(self):
            raise IndexError(f"direction {i!r} is out of range: the atlas has {len(self)} directions.")
        return i % len(self)

    def for_token(self, token: Union[str, int]) -> int:
        """Index of the direction of ``token`` (its text as a label, or its id)."""
        if self.index["kind"] not in ("vocab", "tokens"):
            raise KeyError(f"this atlas holds {self.index['kind']} directions, not tokens.")
        if isinstance(token, int):
            ids = self.index["ids"]
            if token in ids:
                return ids.index(token)
            raise KeyError(f"token id {token} is not in this atlas.")
        if token in self.labels:
            return self.labels.index(token)
        stripped = [i for i, lab in enumerate(self.labels) if lab.strip() == token.strip()]
        if stripped:
            return stripped[0]
        raise KeyError(f"token {token!r} is not in this atlas (labels are decoded token texts).")

    def for_feature(self, feature: int) -> int:
        """Index of the direction of SAE feature ``feature`` (``sae:DIR`` atlases)."""
        if self.index["kind"] != "sae":
            raise KeyError(f"this atlas holds {self.index['kind']} directions, not SAE features.")
        ids = self.index["ids"]
        if feature not in ids:
            raise KeyError(f"feature {feature} is not in this atlas ({len(ids)} features).")
        return ids.index(feature)

    # -- data -------------------------------------------------------------------------------------
    def _shard(self, s: int) -> Dict[str, Tensor]:
        if s not in self._cache:
            self._cache[s] = store.load_shard(self.root, s)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(s)
        return self._cache[s]

    def entry(self, i: int) -> Dict[str, Tensor]:
        """Every stored tensor of direction ``i`` (values, vectors, residuals, readings, contexts)."""
        i = self._check(i)
        shard = int(self.index["shard"])
        t = self._shard(i // shard)
        return {name: v[i % shard] for name, v in t.items()}

    def direction(self, i: int) -> Tensor:
        """The output direction ``u`` ``[d_model]`` of entry ``i``."""
        return self.entry(i)["directions"]

    def eigen(self, i: Union[int, Sequence[int]]) -> Eigendecomposition:
        """The stored top-``k`` eigenpairs of one or several directions as an ``Eigendecomposition``."""
        idx = [i] if isinstance(i, int) else list(i)
        rows = [self.entry(j) for j in idx]
        return Eigendecomposition(torch.stack([r["values"] for r in rows]), torch.stack([r["vectors"] for r in rows]),
                                  torch.stack([r["directions"] for r in rows]), self.layer,
                                  bool(self.index["homogeneous"]))

    def summary(self, by: str) -> Tensor:
        """``[n]``: the ranking quantity ``by`` for every direction (reads each shard once)."""
        if by not in RANK_KEYS:
            raise ValueError(f"by must be one of {', '.join(RANK_KEYS)}, got {by!r}.")
        parts = []
        for s in range(int(self.index["n_shards"])):
            t = self._shard(s)
            parts.append(t["values"][:, 0].abs() if by == "lambda1" else t[by])
        return torch.cat(parts)

    def rank(self, by: str = "low_rank", descending: bool = True, top: Optional[int] = None) -> List[int]:
        """Direction indices ordered by ``by`` (best first); ``top`` keeps the first ones."""
        order = self.summary(by).argsort(descending=descending, stable=True).tolist()
        return order[:top] if top is not None else order

    def residuals(self) -> Tensor:
        """``[n, k]`` certified relative residuals ``||Q v - lambda v|| / |lambda_1|``."""
        return torch.cat([self._shard(s)["residuals"] for s in range(int(self.index["n_shards"]))])
