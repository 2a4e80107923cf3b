"""The injection classifier: MiniLM sentence embeddings and a logistic-regression head trained on public data.

Rules catch the phrasings attackers reuse; the classifier catches paraphrases. A text is cut into windows
of a few sentences (an instruction hidden in a long email is one sentence among many, and a mean-pooled
embedding of the whole email would drown it); the windows most likely to hold an instruction are embedded
and the highest probability wins. Windows are ~200 characters (one or two sentences, ~45 tokens): longer
windows dilute a one-sentence instruction with the text around it. How many windows are embedded per text
is the latency budget: three by default, the first one and the two with the densest instruction cues, so a
long document costs the same as a short message.

The head's weights ship as `injection_head.json` beside this module (the training script, its data
sources and their licences are in `bench/`); `make guardrails-train` rebuilds it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.embeddings import Embedder, MiniLMEmbedder, require_numpy
from tether.exceptions import ConfigError

from ._base import DEFAULT_MAX_CHARS, TextGuard, check_action
from ._text import excerpt
from ._verdict import Action, GuardContext, Source, Span, Stage, Verdict

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["InjectionClassifier", "InjectionClassifierGuard", "LogisticHead", "split_windows"]

_HEAD_FILE = "injection_head.json"
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|\n+")  # noqa: RUF001  (CJK sentence ends)
# words that instructions to a model use; they rank windows when a text has more than the budget allows
_CUES = re.compile(
    r"\b(?:you|your|ignore|disregard|forget|instructions?|system|prompt|assistant|ai|must|now|reply|respond|"
    r"output|print|send|forward|reveal|pretend|act|override|password|secret|jailbreak|mode|rules|new|instead|"
    r"important|note|email|include|tell|say|do not|don't|never|always|answer)\b",
    re.IGNORECASE,
)


def split_windows(text: str, size: int = 200) -> list[tuple[int, int]]:
    """Cut `text` into windows of whole sentences of at most about `size` characters.

    Args:
        text: the text.
        size: the target window length; a longer sentence is cut at `size`.

    Returns:
        `(start, end)` offsets of the windows, covering the text in order.
    """
    if len(text) <= size:
        return [(0, len(text))] if text.strip() else []
    bounds: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        bounds.append((start, m.start()))
        start = m.end()
    bounds.append((start, len(text)))
    windows: list[tuple[int, int]] = []
    cur_start, cur_end = -1, -1
    for s, e in bounds:
        while e - s > size:  # a run-on "sentence" (minified text, a long line) is cut hard
            if cur_start >= 0:
                windows.append((cur_start, cur_end))
                cur_start = -1
            windows.append((s, s + size))
            s += size
        if s >= e:
            continue
        if cur_start < 0:
            cur_start, cur_end = s, e
        elif e - cur_start <= size:
            cur_end = e
        else:
            windows.append((cur_start, cur_end))
            cur_start, cur_end = s, e
    if cur_start >= 0:
        windows.append((cur_start, cur_end))
    return [(s, e) for s, e in windows if text[s:e].strip()]


@dataclass(frozen=True, kw_only=True)
class LogisticHead:
    """A logistic-regression head over sentence embeddings.

    Attributes:
        weights: one weight per embedding dimension.
        bias: the intercept.
        threshold: the probability at or above which a window counts as an injection.
        embedder: the name of the embedder the head was trained on (the two must match).
        metadata: training data, figures and provenance, as written by the training script.
    """

    weights: tuple[float, ...]
    bias: float
    threshold: float
    embedder: str
    metadata: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path | None = None) -> LogisticHead:
        """Load a head from JSON; the shipped one by default.

        Raises:
            ConfigError: the file is missing or malformed.
        """
        try:
            if path is None:
                raw = resources.files(__package__).joinpath(_HEAD_FILE).read_text()
            else:
                raw = Path(path).read_text()
            data = json.loads(raw)
            return cls(
                weights=tuple(float(w) for w in data["weights"]),
                bias=float(data["bias"]),
                threshold=float(data["threshold"]),
                embedder=str(data["embedder"]),
                metadata=dict(data.get("metadata", {})),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            where = path or f"tether.guardrails/{_HEAD_FILE}"
            raise ConfigError(f"cannot load the injection head from {where}: {exc}") from exc

    def save(self, path: str | Path) -> None:
        """Write the head as JSON (weights rounded to 6 significant digits: ~8 KB)."""
        data = {
            "embedder": self.embedder,
            "threshold": round(self.threshold, 6),
            "bias": float(f"{self.bias:.6g}"),
            "weights": [float(f"{w:.6g}") for w in self.weights],
            "metadata": self.metadata,
        }
        Path(path).write_text(json.dumps(data, indent=1) + "\n")

    def predict(self, embeddings: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Probabilities that each row is an injection."""
        import numpy as np

        z = embeddings.astype(np.float64) @ np.asarray(self.weights) + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


class InjectionClassifier:
    """Windows a text, embeds the most instruction-like windows and scores them with the head.

    Args:
        embedder: the sentence encoder; `MiniLMEmbedder()` by default (loaded on first use).
        head: the trained head; the shipped one by default.
        window_chars: the window length in characters.
        max_windows: how many windows of one text are embedded (the latency budget); 0 means all.

    Raises:
        ImportError: the embeddings extra is not installed.
        ConfigError: the head was trained on another embedder.
    """

    def __init__(
        self,
        embedder: Embedder | None = None,
        head: LogisticHead | None = None,
        *,
        window_chars: int = 200,
        max_windows: int = 3,
    ):
        require_numpy("InjectionClassifier")
        self.head = head if head is not None else LogisticHead.load()
        self.embedder = embedder if embedder is not None else MiniLMEmbedder()
        if self.embedder.name != self.head.embedder:
            raise ConfigError(
                f"the injection head was trained on {self.head.embedder!r}, not {self.embedder.name!r}"
            )
        self.window_chars = window_chars
        self.max_windows = max_windows

    def select_windows(self, text: str) -> list[tuple[int, int]]:
        """The windows of `text` that will be embedded: all of them, or the most cue-laden within budget."""
        windows = split_windows(text, self.window_chars)
        if self.max_windows <= 0 or len(windows) <= self.max_windows:
            return windows
        # the first window is always read (a direct request usually opens with it); the rest by cue density
        ranked = sorted(
            windows[1:],
            # distinct cue words, so that a window repeating one word ("now, now, now") does not outrank
            # a sentence that is an instruction
            key=lambda w: -len({c.lower() for c in _CUES.findall(text, w[0], w[1])}),
        )
        return sorted([windows[0], *ranked[: self.max_windows - 1]])

    def score(self, texts: Sequence[str]) -> list[tuple[float, tuple[int, int]]]:
        """For each text, the highest window probability and that window's span.

        Args:
            texts: the texts.

        Returns:
            `(probability, (start, end))` per text; `(0.0, (0, 0))` for an empty text.
        """
        spans: list[list[tuple[int, int]]] = [self.select_windows(t) for t in texts]
        flat = [t[s:e] for t, ws in zip(texts, spans, strict=True) for s, e in ws]
        if not flat:
            return [(0.0, (0, 0)) for _ in texts]
        probs = self.head.predict(self.embedder.embed(flat))
        out: list[tuple[float, tuple[int, int]]] = []
        i = 0
        for ws in spans:
            if not ws:
                out.append((0.0, (0, 0)))
                continue
            chunk = probs[i : i + len(ws)]
            best = int(chunk.argmax())
            out.append((float(chunk[best]), ws[best]))
            i += len(ws)
        return out


class InjectionClassifierGuard(TextGuard):
    """The injection classifier as a guard.

    Args:
        classifier: the classifier; built with defaults on first use when omitted (so constructing the
            guard does not load the encoder).
        threshold: probability at or above which the guard asks for `action`; the head's own by default.
        flag_threshold: probability at or above which it flags (`threshold * 0.75` by default).
        action: what to ask for above `threshold`.
        stages: where it runs (input: user text and tool results).
        name: the guard's name in verdicts.
        max_chars: read at most this many characters.
    """

    def __init__(
        self,
        classifier: InjectionClassifier | None = None,
        *,
        threshold: float | None = None,
        flag_threshold: float | None = None,
        action: Action = "block",
        stages: Iterable[Stage] = ("input",),
        name: str = "injection_classifier",
        max_chars: int = DEFAULT_MAX_CHARS,
    ):
        super().__init__(name=name, stages=stages, max_chars=max_chars)
        require_numpy("InjectionClassifierGuard")
        self._classifier = classifier
        self._threshold = threshold
        self._flag_threshold = flag_threshold
        self.action = check_action(action, name)

    @property
    def classifier(self) -> InjectionClassifier:
        """The classifier, built on first use."""
        if self._classifier is None:
            self._classifier = InjectionClassifier()
        return self._classifier

    @property
    def threshold(self) -> float:
        """The blocking threshold."""
        return self._threshold if self._threshold is not None else self.classifier.head.threshold

    @property
    def flag_threshold(self) -> float:
        """The flagging threshold."""
        return self._flag_threshold if self._flag_threshold is not None else self.threshold * 0.75

    def probability(self, text: str, source: Source = "user") -> float:
        """The classifier's probability that `text` holds an injection."""
        return self.classifier.score([text])[0][0]

    def _check_text(self, text: str, context: GuardContext) -> list[Verdict]:
        if not text.strip():
            return []
        prob, (start, end) = self.classifier.score([text])[0]
        if prob < self.flag_threshold:
            return []
        action: Action = self.action if prob >= self.threshold else "flag"
        return [
            Verdict(
                guard=self.name,
                category="injection",
                action=action,
                score=round(prob, 4),
                spans=(Span(start=start, end=end, excerpt=excerpt(text, start, end), label="classifier"),),
                message=f"injection classifier p={prob:.2f} (threshold {self.threshold:.2f})",
            )
        ]
