"""The `Embedder` contract that the guardrails, the semantic cache and the router share."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.util import find_spec
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["Embedder", "cosine_similarity", "require_numpy"]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into fixed-size vectors whose dot product measures how alike their meanings are.

    Implementations return L2-normalised rows, so a dot product is a cosine similarity. They never touch
    the network: the weights come from an installed package or a local path.

    Attributes:
        name: a stable identifier of the model (it keys caches, so two models never share vectors).
        dim: the length of every vector.
    """

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed `texts`.

        Args:
            texts: the texts to embed; an empty sequence gives an array of shape `(0, dim)`.

        Returns:
            A float32 array of shape `(len(texts), dim)` with L2-normalised rows.
        """
        ...


def require_numpy(feature: str) -> None:
    """Fail with the extra to install when numpy is missing.

    Args:
        feature: what the caller tried to use, for the message.

    Raises:
        ImportError: numpy is not installed.
    """
    if find_spec("numpy") is None:
        raise ImportError(f"install 'tether[embeddings]' to use {feature} (numpy is missing)")


def cosine_similarity(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Cosine similarity of every row of `a` with every row of `b`.

    Args:
        a: array of shape `(n, dim)`.
        b: array of shape `(m, dim)`.

    Returns:
        Array of shape `(n, m)`; rows that are all zeros compare as 0.
    """
    import numpy as np

    def _unit(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        # a zero vector has no direction: leave it zero instead of dividing by zero
        return x / np.where(norms == 0.0, 1.0, norms)

    return (_unit(np.asarray(a, dtype=np.float32)) @ _unit(np.asarray(b, dtype=np.float32)).T).astype(
        np.float32
    )
