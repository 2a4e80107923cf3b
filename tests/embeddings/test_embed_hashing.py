"""The hashing stand-in embedder: deterministic, normalised, similar for shared words."""

from __future__ import annotations

import pytest

np = pytest.importorskip("numpy", reason="the embeddings extra is not installed")

from tether.embeddings import Embedder, HashingEmbedder  # noqa: E402  (after the importorskip guards)


def test_deterministic_and_normalised() -> None:
    e = HashingEmbedder(dim=64)
    assert isinstance(e, Embedder)
    a = e.embed(["refund my order", "refund my order"])
    assert np.array_equal(a[0], a[1])
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0)
    assert e.name == "hashing-64"


def test_shared_words_are_closer() -> None:
    a, b, c = HashingEmbedder().embed(
        ["refund my order please", "please refund the order", "weather in oslo"]
    )
    assert float(a @ b) > float(a @ c)


def test_empty_text_is_a_zero_vector() -> None:
    out = HashingEmbedder(dim=8).embed([""])
    assert out.shape == (1, 8) and not out.any()
