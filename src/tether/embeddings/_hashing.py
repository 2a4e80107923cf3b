"""A deterministic, dependency-light embedder for tests and for wiring code before the model is installed."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._base import require_numpy

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["HashingEmbedder"]

_TOKEN = re.compile(r"\w+")


class HashingEmbedder:
    """Bag of words hashed into `dim` buckets, L2-normalised: texts sharing words are similar.

    It has no notion of meaning ("car" and "automobile" are unrelated), so it stands in for a real
    embedder only where a test needs predictable similarities without loading a model.

    Args:
        dim: the vector length.
    """

    def __init__(self, dim: int = 256):
        require_numpy("HashingEmbedder")
        self._dim = dim

    @property
    def name(self) -> str:
        """`hashing-<dim>`: vectors of two dims are never mixed in a cache."""
        return f"hashing-{self._dim}"

    @property
    def dim(self) -> int:
        """The vector length."""
        return self._dim

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed `texts` into L2-normalised rows of shape `(len(texts), dim)`."""
        import numpy as np

        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts; wrap a single text in a list")
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in _TOKEN.findall(text.lower()):
                # blake2b, not hash(): Python salts str hashes per process, and vectors must be stable
                h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
                out[row, h % self._dim] += 1.0 if (h >> 63) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0.0, 1.0, norms)
