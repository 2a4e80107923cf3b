"""Out-of-scope requests: is the user's text near any of the agent's allowed topics?

Each topic is a few example requests or a description; the text's embedding is compared with each
example and the best cosine similarity decides. Embeddings of the examples are computed once, on first
use. Small talk ("hi", "thanks!") is let through by length so that a support agent can still say hello.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tether.embeddings import Embedder, MiniLMEmbedder, require_numpy
from tether.exceptions import ConfigError

from ._base import TextGuard, check_action
from ._verdict import Action, GuardContext, Span, Stage, Verdict

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["TopicScopeGuard"]


class TopicScopeGuard(TextGuard):
    """Flags (or blocks) user requests that are not about the agent's allowed topics.

    Args:
        topics: topic name -> example requests (or one description); a plain list is one example per topic.
        embedder: the sentence encoder; `MiniLMEmbedder()` by default.
        threshold: the lowest best-match cosine similarity that counts as in scope. 0.3 suits MiniLM
            with a handful of examples per topic; measure on your own traffic.
        min_words: texts with fewer words are not checked (greetings, "yes", "thanks").
        action: what to ask for when out of scope (`block` gives the user the stack's refusal).
        stages: where it runs (user input by default).
        name: the guard's name in verdicts.
        max_chars: embed at most this many characters of a text.
    """

    def __init__(
        self,
        topics: Mapping[str, Sequence[str] | str] | Sequence[str],
        *,
        embedder: Embedder | None = None,
        threshold: float = 0.3,
        min_words: int = 3,
        action: Action = "block",
        stages: Iterable[Stage] = ("input",),
        name: str = "topic_scope",
        max_chars: int = 2000,
    ):
        super().__init__(name=name, stages=stages, max_chars=max_chars)
        require_numpy("TopicScopeGuard")
        if isinstance(topics, Mapping):
            pairs = [(t, e) for t, ex in topics.items() for e in ([ex] if isinstance(ex, str) else ex)]
        else:
            pairs = [(t, t) for t in topics]
        pairs = [(t, e) for t, e in pairs if e.strip()]
        if not pairs:
            raise ConfigError(f"guard {name!r}: give at least one allowed topic")
        if not -1.0 <= threshold <= 1.0:
            raise ConfigError(f"guard {name!r}: threshold is a cosine similarity in -1..1, got {threshold}")
        self._topic_of = [t for t, _ in pairs]
        self._examples = [e for _, e in pairs]
        self._embedder = embedder
        self.threshold = threshold
        self.min_words = min_words
        self.action = check_action(action, name)
        self._matrix: npt.NDArray[np.float32] | None = None

    @property
    def embedder(self) -> Embedder:
        """The encoder, built on first use."""
        if self._embedder is None:
            self._embedder = MiniLMEmbedder()
        return self._embedder

    def similarity(self, text: str) -> tuple[float, str]:
        """The best cosine similarity of `text` to an example, and that example's topic."""
        if self._matrix is None:
            self._matrix = self.embedder.embed(self._examples)
        vec = self.embedder.embed([text[: self.max_chars]])[0]
        sims = self._matrix @ vec
        best = int(sims.argmax())
        return float(sims[best]), self._topic_of[best]

    def _check_text(self, text: str, context: GuardContext) -> list[Verdict]:
        if len(text.split()) < self.min_words:
            return []
        score, topic = self.similarity(text)
        if score >= self.threshold:
            return []
        end = min(len(text), 80)
        details: dict[str, Any] = {"nearest_topic": topic, "similarity": round(score, 3)}
        return [
            Verdict(
                guard=self.name,
                category="out_of_scope",
                action=self.action,
                score=round(min(1.0, max(0.0, 1.0 - score)), 4),
                spans=(Span(start=0, end=end, excerpt=text[:end], label="request"),),
                message=f"request is outside this agent's topics (nearest {details['nearest_topic']!r}, "
                f"similarity {details['similarity']} < {self.threshold})",
            )
        ]
