"""The embedded model: a Qwen2.5-Coder GGUF run in-process by llama.cpp.

```python
from tether.models.llamacpp import LlamaCppModel

model = LlamaCppModel()  # qwen2.5-coder-0.5b, assembled and verified on first use
response = await model.request([UserMessage(content="What is 17*23?")], tools=[calculator])
```

Small models are made reliable here rather than trusted:

* Tool calls are constrained. The model writes freely until it opens a `<tool_call>` (or, as the 0.5B
  and 1.5B models mostly do, starts its answer with a bare `{"name": ...`); from there a GBNF grammar
  built from the tools' JSON schemas lets it write only `{"name": <a tool>, "arguments": <that tool's
  schema>}`, so every call parses and matches its schema. `tool_choice="required"` starts in the
  grammar; `"none"` bans the token that opens a call.
* Prompts are rendered prefix-stable (`_qwen`) and llama.cpp keeps its KV cache between calls, so a
  step of a run evaluates only the tokens the previous step did not: the new tool results and question.
* Every constrained call says how sure the model was of it (`ToolCall.confidence`): the probability the
  model gave to that tool with those argument values, the product of the probabilities of the tokens
  that wrote the tool's name and the values (`call_confidence` has the formula and why). Copied from
  the conversation, a value scores near 1; made up, far lower (an order id or amount nobody gave: 0.17
  to 0.43 on the 0.5B model), so an approval policy's confidence floor sends invented irreversible
  calls to a human. The probabilities come from the logits llama.cpp computes anyway: one softmax
  normaliser per token of a call, under 1 % of the token's time. Calls recovered from free text (a
  repair) carry no confidence.
* Generation runs in a worker thread, one call at a time per model; a timeout stops it within a token
  (within a graph node while the prompt is evaluated) and raises `ModelTimeout` at once.
"""

from __future__ import annotations

import codecs
import copy
import ctypes
import importlib.util
import json
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import anyio
import anyio.to_thread

from ..exceptions import ModelError, ModelFileError, ModelResponseError, ModelTimeout
from . import _parse, _qwen
from ._base import Model, ModelSettings, TokenCallback
from ._gguf import DEFAULT_MODEL, resolve_model_path
from ._messages import Message, ModelResponse, ToolCall, ToolDefinition, Usage

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = [
    "CALL_AS_ANSWER_REFUSED",
    "DUPLICATE_TOOL_CALL",
    "EMPTY_ANSWER_REFUSED",
    "TEXT_AFTER_TOOL_CALL",
    "TOOL_CALL_SUPPRESSED",
    "GenerationStats",
    "LlamaCppModel",
    "call_confidence",
    "tool_call_grammar",
]

_INSTALL_HINT: Final = "install 'tether[local]' to use LlamaCppModel"
_TEXT_STOPS: Final = (_qwen.TOOL_CALL_OPEN, _qwen.TOOL_RESPONSE_OPEN)
# How small models begin a call they forget to tag, compared with whitespace removed; seen at the very
# start of an answer, they mean a call and hand over to the grammar before the model improvises one.
_CALL_OPENERS: Final = (
    '{"name"',
    '{{"name"',
    '[{"name"',
    '{"function"',
    '{"type":"function"',
    '```json{"name"',
    '```{"name"',
    '```json{{"name"',
    '```json[{"name"',
    # the last character of the `<tool_call>` tag, written when the tag's own token is banned
    '>{"name"',
)
_OPENER: Final = "<opener>"
# enough tokens after an opener for the name of the tool it calls
_NAME_PEEK_TOKENS: Final = 24
_CALLED_NAME: Final = re.compile(r'"name"\s*:\s*"([^"]+)"')
# the first characters of a call written as text: JSON, a list of calls, a fence, a tag
_CALL_START_CHARS: Final = frozenset("{[`<")
# after a call the model either ends its turn or opens another call; more than this is chatter
_BETWEEN_CALLS_MAX_TOKENS: Final = 16
# agents use a handful of tool sets; this only bounds the memory of a caller that varies them freely
_GRAMMAR_CACHE_SIZE: Final = 64

TEXT_AFTER_TOOL_CALL: Final = "text_after_tool_call"
"""Repair: the model wrote text after its tool call(s); the chat format cannot carry it, so it was dropped."""
EMPTY_ANSWER_REFUSED: Final = "empty_answer_refused"
"""Repair: the model ended its turn without a word or a call; it was asked again with its first token
not allowed to end the turn."""
TOOL_CALL_SUPPRESSED: Final = "tool_call_suppressed"
"""Repair: with `tool_choice="none"` the model began a tool call anyway; the answer ends before it."""
CALL_AS_ANSWER_REFUSED: Final = "call_as_answer_refused"
"""Repair: with `tool_choice="none"` the model began its answer as a call to one of its tools written as
text (bare or fenced JSON); it was asked again with its first token not allowed to open JSON, a fence or
a tag."""
DUPLICATE_TOOL_CALL: Final = "duplicate_tool_call"
"""Repair: the model repeated a call (same tool, same arguments) within one answer; the copy was dropped."""


@dataclass(frozen=True, kw_only=True)
class GenerationStats:
    """How one `request` spent its time, for benchmarks and tokens-per-second displays.

    Attributes:
        prompt_tokens: tokens in the rendered prompt.
        cached_tokens: prompt tokens served from the KV cache (not evaluated again).
        evaluated_tokens: prompt tokens evaluated, including the short continuations llama.cpp is fed
            around a constrained tool call.
        output_tokens: tokens generated.
        prompt_eval_s: seconds spent evaluating prompt tokens.
        generation_s: seconds spent generating (sampling each token and evaluating it).
    """

    prompt_tokens: int
    cached_tokens: int
    evaluated_tokens: int
    output_tokens: int
    prompt_eval_s: float
    generation_s: float

    @property
    def prompt_tps(self) -> float:
        """Prompt tokens evaluated per second (0 when nothing was evaluated)."""
        return self.evaluated_tokens / self.prompt_eval_s if self.prompt_eval_s > 0 else 0.0

    @property
    def generation_tps(self) -> float:
        """Tokens generated per second, prompt evaluation excluded (0 when nothing was generated)."""
        return self.output_tokens / self.generation_s if self.generation_s > 0 else 0.0


class LlamaCppModel(Model):
    """A GGUF model run in-process by llama.cpp, with constrained tool calls and KV-cache reuse.

    The weights load on the first request (or `await model.load()`), in a worker thread. One
    `llama_cpp.Llama` is held per instance and calls are serialised on it; make one instance per
    model and share it between agents so that they share the loaded weights.

    Args:
        model: a registered model name (`qwen2.5-coder-0.5b`, `qwen2.5-coder-1.5b`), or with `path`,
            any name for the file.
        path: a GGUF file to load instead of the registered one (`$TETHER_MODEL_PATH` otherwise).
            The file is expected to use Qwen2.5's chat format.
        n_ctx: context window in tokens (prompt and answer together).
        n_threads: CPU threads; default one per physical core this process may run on, as llama.cpp
            chooses. llama.cpp's threads spin-wait on each other, so on a machine whose cores are busy
            with other work, fewer threads can be much faster.
        n_threads_batch: CPU threads for evaluating prompts; default `n_threads`.
        n_batch: prompt tokens evaluated per llama.cpp batch.
        reuse_kv_cache: keep the KV cache between calls so a prompt that extends the previous one
            evaluates only its new tokens. `False` evaluates every prompt in full (for comparison).
        max_tool_calls: the most calls one answer may carry.
        verbose: let llama.cpp log to stderr.

    Raises:
        ImportError: llama-cpp-python is not installed.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        path: str | os.PathLike[str] | None = None,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        n_batch: int = 512,
        reuse_kv_cache: bool = True,
        max_tool_calls: int = 8,
        verbose: bool = False,
    ) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise ImportError(_INSTALL_HINT)
        self._model = model
        self._path = path
        self._n_ctx = n_ctx
        self._n_threads = n_threads or _physical_cores()
        self._n_threads_batch = n_threads_batch or self._n_threads
        self._n_batch = n_batch
        self.reuse_kv_cache = reuse_kv_cache
        self._max_tool_calls = max_tool_calls
        self._verbose = verbose
        self._llm: Llama | None = None
        self._lock = threading.Lock()
        self._grammars: dict[tuple[tuple[str, str], ...], str] = {}
        self._call_start_tokens: tuple[int, ...] | None = None
        self.model_path: Path | None = None
        """The GGUF file loaded, once loaded."""
        self.load_duration_s: float | None = None
        """Seconds the last load took (file check and assembly included), once loaded."""
        self.last_stats: GenerationStats | None = None
        """Timings and token counts of the last completed request."""

    @property
    def name(self) -> str:
        """`local:<model>`, e.g. `local:qwen2.5-coder-0.5b`."""
        return f"local:{self._model}"

    @property
    def last_generation_tps(self) -> float | None:
        """Generation speed of the last request in tokens per second, prompt evaluation excluded."""
        return self.last_stats.generation_tps if self.last_stats else None

    def __repr__(self) -> str:
        return f"LlamaCppModel({self._model!r}, n_ctx={self._n_ctx}, n_threads={self._n_threads})"

    async def load(self) -> None:
        """Load the weights now rather than on the first request (idempotent).

        Raises:
            ModelFileError: the model file is missing, corrupt or not loadable.
        """
        if self._llm is None:
            await anyio.to_thread.run_sync(self._load_locked)

    async def aclose(self) -> None:
        """Free the weights and the KV cache; the next request loads them again."""
        await anyio.to_thread.run_sync(self._close_locked)

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings = ModelSettings(),  # noqa: B008 - frozen dataclass, safe as a default
        on_token: TokenCallback | None = None,
    ) -> ModelResponse:
        """Answer the conversation, with text or constrained tool calls.

        `on_token` receives the answer's text as it is generated (from the worker thread), not the
        JSON of tool calls. The load, if still to do, is not counted against `settings.timeout_s`.

        Raises:
            ModelTimeout: no answer within `settings.timeout_s`.
            ModelError: the prompt does not fit in `n_ctx`.
            ModelFileError: the model file is missing or corrupt (first request only).
        """
        await self.load()
        prompt = _qwen.render_prompt(messages, tools)
        job = _Job(
            prompt=prompt,
            tools=tuple(tools),
            mode=settings.tool_choice if tools else "none",
            settings=settings,
            on_token=on_token,
        )
        started = time.perf_counter()
        with anyio.move_on_after(settings.timeout_s) as scope:
            try:
                # abandoned on cancel: the worker notices `job.stop` within a token and frees the lock
                outcome = await anyio.to_thread.run_sync(self._run_locked, job, abandon_on_cancel=True)
            except BaseException:
                job.stop.set()
                raise
        if scope.cancelled_caught:
            job.stop.set()
            raise ModelTimeout(
                f"{self.name} gave no answer within timeout_s={settings.timeout_s:g}s; "
                "raise ModelSettings.timeout_s or lower max_tokens"
            )
        return ModelResponse(
            text=outcome.text,
            tool_calls=outcome.calls,
            usage=Usage(
                input_tokens=outcome.stats.prompt_tokens,
                output_tokens=outcome.stats.output_tokens,
                cached_tokens=outcome.stats.cached_tokens,
            ),
            model=self.name,
            finish_reason=outcome.finish_reason,
            duration_s=time.perf_counter() - started,
            repairs=outcome.repairs,
        )

    # -- worker thread ----------------------------------------------------------------------------

    def _load_locked(self) -> None:
        with self._lock:
            self._load()

    def _close_locked(self) -> None:
        with self._lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None

    def _load(self) -> Llama:
        if self._llm is not None:
            return self._llm
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise ImportError(_INSTALL_HINT) from e
        started = time.perf_counter()
        path = resolve_model_path(self._model, path=self._path)
        try:
            llm = Llama(
                model_path=str(path),
                n_ctx=self._n_ctx,
                n_batch=self._n_batch,
                n_ubatch=self._n_batch,
                n_threads=self._n_threads,
                n_threads_batch=self._n_threads_batch,
                n_gpu_layers=0,
                verbose=self._verbose,
            )
        except (ValueError, RuntimeError) as e:
            raise ModelFileError(
                f"llama.cpp could not load {path}: {e}; check the file is a valid GGUF"
            ) from e
        self._llm = llm
        self.model_path = path
        self.load_duration_s = time.perf_counter() - started
        return llm

    def _run_locked(self, job: _Job) -> _Outcome:
        with self._lock:
            if job.stop.is_set():
                raise _Stopped
            llm = self._load()
            if not self.reuse_kv_cache:
                llm.reset()
            allowed = job.settings.allowed_tools
            callable_tools = [t for t in job.tools if t.name in allowed] if allowed else job.tools
            outcome = _Generation(
                llm,
                job,
                self._grammar(callable_tools or job.tools),
                self._max_tool_calls,
                call_starts=lambda: self._call_starts(llm),
            ).run()
            self.last_stats = outcome.stats
            return outcome

    def _call_starts(self, llm: Llama) -> tuple[int, ...]:
        """The tokens an answer written as a call starts with, found once per model (0.4 s over Qwen's
        151k tokens, on the first answer that needs them): blank ones, and those opening JSON, a fence
        or a tag."""
        if self._call_start_tokens is None:
            starts = []
            for token in range(llm.n_vocab()):
                piece = llm.detokenize([token]).decode("utf-8", errors="ignore").lstrip()
                if not piece or piece[0] in _CALL_START_CHARS:
                    starts.append(token)
            self._call_start_tokens = tuple(starts)
        return self._call_start_tokens

    def _grammar(self, tools: Sequence[ToolDefinition]) -> str:
        key = tuple((t.name, json.dumps(t.parameters, sort_keys=True)) for t in tools)
        grammar = self._grammars.get(key)
        if grammar is None:
            if len(self._grammars) >= _GRAMMAR_CACHE_SIZE:
                self._grammars.clear()
            grammar = self._grammars[key] = tool_call_grammar(tools) if tools else ""
        return grammar


# -- one request --------------------------------------------------------------------------------


class _Stopped(Exception):
    """The request was cancelled or timed out; raised inside the worker to unwind it."""


@dataclass(kw_only=True)
class _Job:
    prompt: str
    tools: tuple[ToolDefinition, ...]
    mode: Literal["auto", "required", "none"]
    settings: ModelSettings
    on_token: TokenCallback | None
    stop: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True, kw_only=True)
class _Outcome:
    text: str
    calls: tuple[ToolCall, ...]
    finish_reason: str
    repairs: tuple[str, ...]
    stats: GenerationStats


@dataclass(kw_only=True)
class _Pass:
    """One run of llama.cpp's generator over one prompt."""

    text: str = ""
    tokens: list[int] = field(default_factory=list)
    stopped_on: str | None = None  # a text stop, "eog", or "length"
    # for a constrained pass: each token's log-probability, and where its text ends in `text`
    logprobs: list[float] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)


class _Generation:
    """The passes of one request: free text, then a grammar-constrained call per `<tool_call>`."""

    def __init__(
        self,
        llm: Llama,
        job: _Job,
        grammar: str,
        max_calls: int,
        *,
        call_starts: Callable[[], tuple[int, ...]],
    ) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self._llm = llm
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        # llama.cpp may round the context up; the token buffer keeps the size that was asked for
        self._n_ctx = min(llm.n_ctx(), len(llm.input_ids))
        self._job = job
        self._grammar_text = grammar
        self._max_calls = max_calls
        self._call_starts = call_starts
        self._budget = job.settings.max_tokens
        self._repairs: list[str] = []
        self._prompt_tokens = 0
        self._cached_tokens = 0
        self._evaluated = 0
        self._output = 0
        self._prompt_eval_s = 0.0
        self._generation_s = 0.0
        self._passes = 0

    def run(self) -> _Outcome:
        job = self._job
        prompt_tokens = self._tokenize(job.prompt)
        self._prompt_tokens = len(prompt_tokens)
        if len(prompt_tokens) >= self._n_ctx:
            raise ModelError(
                f"the prompt is {len(prompt_tokens)} tokens but the context window is n_ctx={self._n_ctx}; "
                "raise LlamaCppModel(n_ctx=...) or shorten the conversation"
            )

        text = ""
        if job.mode == "required":
            calls, finish = self._calls(prompt_tokens)
            return self._outcome("", calls, finish)

        # with tool_choice="none" the tools stay in the prompt (so the KV cache still matches) but the
        # token that opens a call is banned, so the model answers in words
        openers = _CALL_OPENERS
        banned = self._single_token(_qwen.TOOL_CALL_OPEN) if job.mode == "none" else ()
        free = self._pass(prompt_tokens, stops=_TEXT_STOPS, openers=openers, banned=banned, stream=True)
        text = free.text
        if not free.tokens and free.stopped_on == "eog":
            # the model ends its turn without a word or a call (small models do, after a refused call or
            # when told to answer with the call they wanted banned): its first token may not end the turn
            self._repairs.append(EMPTY_ANSWER_REFUSED)
            free, text = self._answer_again(prompt_tokens, openers, banned, first_banned=self._end_tokens())
        if job.mode == "none" and free.stopped_on == _OPENER:
            free, text = self._words_not_call(prompt_tokens, free, banned)
        if free.stopped_on == _OPENER:
            fenced = "".join(text.split()).startswith("```")
            self._repairs.append(_parse.FENCED_JSON_CALL if fenced else _parse.BARE_JSON_CALL)
            calls, finish = self._calls(prompt_tokens)
            return self._outcome("", calls, finish)
        if free.stopped_on == _qwen.TOOL_RESPONSE_OPEN:
            self._repairs.append(_parse.FAKE_TOOL_RESPONSE)
        elif free.stopped_on == _qwen.TOOL_CALL_OPEN:
            if job.mode == "none":
                self._repairs.append(TOOL_CALL_SUPPRESSED)
            else:
                content = text.strip()
                head = f"{content}\n" if content else ""
                calls, finish = self._calls(prompt_tokens + self._tokenize(head))
                return self._outcome(content, calls, finish)

        finish = "length" if free.stopped_on == "length" else "stop"
        if job.mode == "auto":
            # the model may still have written a call without the marker (bare JSON, a fence...)
            parsed = _parse.parse_tool_calls(text)
            self._repairs.extend(parsed.repairs)
            if parsed.calls:
                return self._outcome(parsed.text, parsed.calls, finish)
        return self._outcome(text.strip(), (), finish)

    def _answer_again(
        self,
        prompt_tokens: list[int],
        openers: tuple[str, ...],
        banned: tuple[int, ...],
        *,
        first_banned: tuple[int, ...],
    ) -> tuple[_Pass, str]:
        """Answer again with `first_banned` not allowed as the first token; the last pass and the text."""
        first = self._pass(
            prompt_tokens,
            stops=_TEXT_STOPS,
            openers=openers,
            banned=(*banned, *first_banned),
            stream=True,
            limit=1,
        )
        if first.stopped_on != "length":
            return first, first.text
        # an ordinary first token: the model writes on from it
        rest = self._pass(prompt_tokens + first.tokens, stops=_TEXT_STOPS, banned=banned, stream=True)
        return rest, first.text + rest.text

    def _words_not_call(
        self, prompt_tokens: list[int], opened: _Pass, banned: tuple[int, ...]
    ) -> tuple[_Pass, str]:
        """With tool_choice="none", an answer that began as JSON: if it is a call to one of the tools
        written as text (small models told to answer in words write the call they wanted: the 0.5B in
        about half its forced answer turns), answer again starting with a word; other JSON (an answer
        the user asked for as JSON) is shown and written on. The last pass and the text."""
        head = prompt_tokens + opened.tokens
        peek = self._pass(head, stops=_TEXT_STOPS, banned=banned, limit=_NAME_PEEK_TOKENS)
        text = opened.text + peek.text
        named = _CALLED_NAME.search(text)
        if named is not None and named.group(1) in {t.name for t in self._job.tools}:
            self._repairs.append(CALL_AS_ANSWER_REFUSED)
            first_banned = (*self._end_tokens(), *self._call_starts())
            return self._answer_again(prompt_tokens, (), banned, first_banned=first_banned)
        if self._job.on_token is not None:
            self._job.on_token(text)
        if peek.stopped_on != "length":
            return peek, text
        rest = self._pass(head + peek.tokens, stops=_TEXT_STOPS, banned=banned, stream=True)
        return rest, text + rest.text

    def _calls(self, head_tokens: list[int]) -> tuple[tuple[ToolCall, ...], str]:
        """Constrained calls from `head_tokens` (prompt plus any text the model wrote first)."""
        calls: list[ToolCall] = []
        tokens = head_tokens + self._tokenize(f"{_qwen.TOOL_CALL_OPEN}\n")
        while True:
            constrained = self._pass(tokens, grammar=self._grammar_text)
            confidence = call_confidence(constrained.text, constrained.ends, constrained.logprobs)
            call = _read_call(constrained.text, f"call_{len(calls)}", self._repairs, confidence)
            if call is not None and any(c.name == call.name and c.arguments == call.arguments for c in calls):
                self._repairs.append(DUPLICATE_TOOL_CALL)
            elif call is not None:
                calls.append(call)
            if constrained.stopped_on == "length" or call is None:
                return tuple(calls), "length" if constrained.stopped_on == "length" else "stop"
            tokens = tokens + constrained.tokens + self._tokenize(f"\n{_qwen.TOOL_CALL_CLOSE}")
            if len(calls) >= self._max_calls or self._budget <= 0:
                return tuple(calls), "tool_calls"
            after = self._pass(tokens, stops=_TEXT_STOPS, limit=_BETWEEN_CALLS_MAX_TOKENS)
            if after.stopped_on != _qwen.TOOL_CALL_OPEN:
                if after.text.strip():
                    self._repairs.append(TEXT_AFTER_TOOL_CALL)
                return tuple(calls), "tool_calls"
            if after.text.strip():
                self._repairs.append(TEXT_AFTER_TOOL_CALL)
            # the template separates calls with one newline; write that, not what the model wrote
            tokens = tokens + self._tokenize(f"\n{_qwen.TOOL_CALL_OPEN}\n")

    def _outcome(self, text: str, calls: Sequence[ToolCall], finish: str) -> _Outcome:
        if calls and finish != "length":
            finish = "tool_calls"
        return _Outcome(
            text=text,
            calls=tuple(calls),
            finish_reason=finish,
            repairs=tuple(dict.fromkeys(self._repairs)),
            stats=GenerationStats(
                prompt_tokens=self._prompt_tokens,
                cached_tokens=self._cached_tokens,
                evaluated_tokens=self._evaluated,
                output_tokens=self._output,
                prompt_eval_s=self._prompt_eval_s,
                generation_s=self._generation_s,
            ),
        )

    def _end_tokens(self) -> tuple[int, ...]:
        """The tokens that end a turn (`<|im_end|>`, `<|endoftext|>`)."""
        return (*self._single_token(_qwen.IM_END), *self._single_token("<|endoftext|>"))

    def _single_token(self, text: str) -> tuple[int, ...]:
        tokens = self._tokenize(text)
        return tuple(tokens) if len(tokens) == 1 else ()

    def _tokenize(self, text: str) -> list[int]:
        if not text:
            return []
        return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def _reused_prefix(self, tokens: list[int]) -> int:
        """How many of `tokens` can be taken from the KV cache: the common prefix with what it holds."""
        import numpy as np

        llm = self._llm
        n = min(llm.n_tokens, len(tokens))
        if n == 0:
            return 0
        differ = np.flatnonzero(llm.input_ids[:n] != np.asarray(tokens[:n], dtype=llm.input_ids.dtype))
        common = int(differ[0]) if differ.size else n
        # with the whole prompt cached, llama.cpp evaluates its last token again to get fresh logits
        return common if common < len(tokens) else len(tokens) - 1

    def _pass(
        self,
        tokens: list[int],
        *,
        stops: tuple[str, ...] = (),
        openers: tuple[str, ...] = (),
        grammar: str = "",
        banned: tuple[int, ...] = (),
        stream: bool = False,
        limit: int | None = None,
    ) -> _Pass:
        """Evaluate `tokens` (reusing the cached prefix) and generate until a stop, EOG or the limit."""
        llm, settings, stop = self._llm, self._job.settings, self._job.stop
        result = _Pass()
        max_new = min(self._budget, self._n_ctx - len(tokens), limit if limit is not None else self._budget)
        if max_new <= 0:
            result.stopped_on = "length"
            return result

        reused = self._reused_prefix(tokens)
        if self._passes == 0:
            self._cached_tokens = min(reused, self._prompt_tokens)
        self._passes += 1
        self._evaluated += len(tokens) - reused

        started = time.perf_counter()
        llm.n_tokens = reused  # llama.cpp drops the cache past this point on the next eval
        with _AbortDuringPromptEval(llm, stop, self._llama_cpp):
            for start in range(reused, len(tokens), llm.n_batch):
                if stop.is_set():
                    raise _Stopped
                self._eval(tokens[start : start + llm.n_batch])
        generating = time.perf_counter()
        self._prompt_eval_s += generating - started

        seed = settings.seed if settings.seed is not None else random.randrange(2**31)
        streamer = _Streamer(self._job.on_token if stream else None, stops, openers)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        with _Sampler(
            self._llama_cpp, llm, temperature=settings.temperature, seed=seed, grammar=grammar, banned=banned
        ) as sampler:
            scored = bool(grammar)
            while True:
                if stop.is_set():
                    raise _Stopped
                token = sampler.sample()
                if self._llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    result.stopped_on = "eog"
                    break
                result.tokens.append(token)
                self._budget -= 1
                hit = streamer.feed(decoder.decode(llm.detokenize([token])))
                if scored:
                    result.logprobs.append(sampler.logprob(token))
                    result.ends.append(len(streamer.text))
                if hit is not None:
                    result.stopped_on = hit
                    break
                if len(result.tokens) >= max_new:
                    result.stopped_on = "length"
                    break
                self._eval([token])
        self._generation_s += time.perf_counter() - generating
        if result.stopped_on not in (*stops, _OPENER):
            streamer.feed(decoder.decode(b"", final=True))
            streamer.flush()
        result.text = streamer.text
        self._output += len(result.tokens)
        return result

    def _eval(self, tokens: list[int]) -> None:
        try:
            self._llm.eval(tokens)
        except RuntimeError as e:
            if self._job.stop.is_set():
                raise _Stopped from None
            raise ModelError(
                f"llama.cpp failed to evaluate the prompt ({e}); try a smaller n_batch or n_ctx"
            ) from e


class _Sampler:
    """Picks the next token, and when a grammar is given, one the grammar allows.

    Checking a grammar against all 151k tokens of Qwen's vocabulary costs about 45 ms on two cores, more
    than generating the token. So, as llama.cpp's own `common_sampler` does, the token is first chosen
    without the grammar and only checked against it; the full, constrained choice is made only when
    that token is not allowed, which inside a call the model is already writing is rare.
    """

    def __init__(
        self,
        llama_cpp: Any,
        llm: Llama,
        *,
        temperature: float,
        seed: int,
        grammar: str = "",
        banned: Sequence[int] = (),
    ) -> None:
        import numpy as np

        self._np = np
        self._lib = llama_cpp
        self._ctx = llm.ctx
        self._n_vocab = llm.n_vocab()
        self._scratch = np.empty(self._n_vocab, dtype=np.single)
        # set when the grammar overruled the model's first choice: the log of the allowed tokens' mass
        self._allowed_logsumexp: float | None = None
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if banned:
            biases = (llama_cpp.llama_logit_bias * len(banned))(
                *(llama_cpp.llama_logit_bias(token=t, bias=-math.inf) for t in banned)
            )
            llama_cpp.llama_sampler_chain_add(
                chain, llama_cpp.llama_sampler_init_logit_bias(self._n_vocab, len(banned), biases)
            )
        if temperature <= 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        else:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(40))
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(0.95, 1))
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_min_p(0.05, 1))
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(temperature))
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed))
        self._chain = chain
        self._grammar = None
        if grammar:
            self._grammar = llama_cpp.llama_sampler_init_grammar(
                llama_cpp.llama_model_get_vocab(llm.model), grammar.encode("utf-8"), b"root"
            )
            if not self._grammar:
                llama_cpp.llama_sampler_free(chain)
                raise ModelResponseError(
                    "llama.cpp rejected the tool-call grammar; check the tools' JSON schemas"
                )
            self._one = (llama_cpp.llama_token_data * 1)()
            self._one_array = llama_cpp.llama_token_data_array(
                data=ctypes.cast(self._one, llama_cpp.llama_token_data_p), size=1, selected=-1, sorted=False
            )

    def __enter__(self) -> _Sampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self._lib.llama_sampler_free(self._chain)
        if self._grammar:
            self._lib.llama_sampler_free(self._grammar)

    def sample(self) -> int:
        lib = self._lib
        self._allowed_logsumexp = None
        token = int(lib.llama_sampler_sample(self._chain, self._ctx, -1))
        if not self._grammar:
            return token
        if not self._allowed(token):
            token = self._constrained()
        # accepting a token the grammar forbids aborts the process, hence the checks above
        lib.llama_sampler_accept(self._grammar, token)
        return token

    def logprob(self, token: int) -> float:
        """The natural log of the probability the model gave `token`, the one just sampled.

        The probability is the softmax of the model's logits (temperature 1, whatever the sampling
        temperature). Where the grammar overruled the model's first choice, `_constrained` already
        masked the vocabulary, and the softmax is over the tokens the grammar allowed. Elsewhere it is
        over the whole vocabulary: masking it too would cost the 45 ms the fast path saves. The grammar
        only removes alternatives, so this is a lower bound of the masked probability, and inside an
        argument value, where the grammar allows nearly every token, the same number.
        """
        logits = self._logits()
        total = self._allowed_logsumexp
        if total is None:
            total = self._logsumexp(logits)
        return float(logits[token]) - total

    def _logits(self) -> Any:
        return self._np.ctypeslib.as_array(
            self._lib.llama_get_logits_ith(self._ctx, -1), shape=(self._n_vocab,)
        )

    def _logsumexp(self, logits: Any) -> float:
        # 0.1 ms for Qwen's 151k tokens on an idle core, in a buffer kept for the pass, not one per token
        np, scratch = self._np, self._scratch
        top = float(logits.max())
        np.subtract(logits, top, out=scratch)
        np.exp(scratch, out=scratch)
        return top + math.log(float(scratch.sum(dtype=np.float64)))

    def _allowed(self, token: int) -> bool:
        self._one[0].id = token
        self._one[0].logit = 0.0
        self._one[0].p = 0.0
        self._one_array.size = 1
        self._one_array.selected = -1
        self._one_array.sorted = False
        self._lib.llama_sampler_apply(self._grammar, ctypes.byref(self._one_array))
        return math.isfinite(self._one[0].logit)

    def _constrained(self) -> int:
        np, lib = self._np, self._lib
        logits = self._logits()
        data = np.empty(
            self._n_vocab, dtype=np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)])
        )
        data["id"] = np.arange(self._n_vocab, dtype=np.intc)
        data["logit"] = logits
        data["p"] = 0.0
        array = lib.llama_token_data_array(
            data=data.ctypes.data_as(lib.llama_token_data_p), size=self._n_vocab, selected=-1, sorted=False
        )
        lib.llama_sampler_apply(self._grammar, ctypes.byref(array))
        # the grammar set what it forbids to -inf; the chain below may rescale and reorder the rest
        self._allowed_logsumexp = self._logsumexp(data["logit"])
        lib.llama_sampler_apply(self._chain, ctypes.byref(array))
        # the samplers reorder and shrink the array in place, in our buffer; `selected` indexes it
        if not 0 <= array.selected < array.size or not math.isfinite(float(data["logit"][array.selected])):
            raise ModelResponseError(
                "the tool-call grammar allows no next token; check the tools' JSON schemas"
            )
        return int(data["id"][array.selected])


class _AbortDuringPromptEval:
    """Let a timeout interrupt prompt evaluation, a few long llama.cpp calls, while it runs.

    llama.cpp asks the abort callback between graph nodes. During token-by-token generation that would
    mean a trip into Python hundreds of times per token, so the callback is installed only around the
    prompt; while generating, the stop flag is checked between tokens instead.
    """

    def __init__(self, llm: Llama, stop: threading.Event, llama_cpp: Any) -> None:
        self._ctx = llm.ctx
        self._lib = llama_cpp
        self._callback = llama_cpp.ggml_abort_callback(lambda _data: stop.is_set())

    def __enter__(self) -> None:
        self._lib.llama_set_abort_callback(self._ctx, self._callback, None)

    def __exit__(self, *exc: object) -> None:
        self._lib.llama_set_abort_callback(self._ctx, self._lib.ggml_abort_callback(), None)


class _Streamer:
    """Accumulates generated text, finds stop strings, and streams what is certainly not one.

    Args:
        on_token: where to stream text, if anywhere.
        stops: strings that end the text wherever they appear (the text ends before them).
        openers: strings that end it when the answer starts with them (whitespace ignored); while the
            answer could still become one, nothing is streamed, so a call is never shown as text.
    """

    def __init__(
        self, on_token: Callable[[str], None] | None, stops: tuple[str, ...], openers: tuple[str, ...] = ()
    ) -> None:
        self._on_token = on_token
        self._stops = stops
        self._longest_stop = max((len(s) for s in stops), default=0)
        self._openers = openers
        self._undecided = bool(openers)
        self.text = ""
        self._sent = 0

    def feed(self, piece: str) -> str | None:
        """Add `piece`; return the stop string (or `_OPENER`) it completes, if any."""
        if not piece:
            return None
        start = max(0, len(self.text) - self._longest_stop)
        self.text += piece
        if self._undecided:
            squeezed = "".join(self.text.split())
            if any(squeezed.startswith(o) for o in self._openers):
                return _OPENER
            self._undecided = any(o.startswith(squeezed) for o in self._openers)
            if self._undecided:
                return None
        for stop in self._stops:
            at = self.text.find(stop, start)
            if at != -1:
                self.text = self.text[:at]
                self.flush()
                return stop
        self._send(len(self.text) - self._held())
        return None

    def flush(self) -> None:
        """Stream everything not yet streamed."""
        self._send(len(self.text))

    def _held(self) -> int:
        # hold back a tail that could be the start of a stop string, so it is never shown
        for size in range(min(len(self.text), self._longest_stop), 0, -1):
            if any(stop.startswith(self.text[-size:]) for stop in self._stops):
                return size
        return 0

    def _send(self, end: int) -> None:
        if self._on_token is not None and end > self._sent:
            self._on_token(self.text[self._sent : end])
        self._sent = max(self._sent, end)


def _read_call(text: str, call_id: str, repairs: list[str], confidence: float | None) -> ToolCall | None:
    """The call the grammar made the model write, or what can be recovered of a truncated one."""
    try:
        payload = json.loads(text)
    except ValueError:
        parsed = _parse.parse_tool_calls(f"{_qwen.TOOL_CALL_OPEN}{text}")
        repairs.extend(parsed.repairs)
        if not parsed.calls:
            return None
        return parsed.calls[0].model_copy(update={"call_id": call_id, "confidence": confidence})
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
        raise ModelResponseError(f"constrained tool call is not a call object: {text[:200]!r}")
    arguments = payload.get("arguments", {})
    return ToolCall(call_id=call_id, name=payload["name"], arguments=arguments, confidence=confidence)


def call_confidence(text: str, token_ends: Sequence[int], logprobs: Sequence[float]) -> float | None:
    """How sure the model was of one call it wrote: the probability it gave to this tool with these values.

    `confidence = exp(sum of log p(token))` over the tokens that write the tool's name and the scalar
    argument values (string contents, numbers, booleans), where `p(token)` is the token's probability
    under the softmax of the model's logits at temperature 1, as `LlamaCppModel` records it while
    generating: over the tokens the grammar allowed where it overruled the model's first choice, else
    over the whole vocabulary (the same number inside a value, where the grammar allows nearly every
    token). The JSON around the values (braces, keys, quotes, separators) is left out: the grammar forces
    most of it, and where it does not, the alternatives are other spellings of the same call (`"}}`
    against `"}` then `}`), not other calls. A token counts when its text overlaps a value.

    A value copied from the conversation costs almost nothing (each of its tokens near 1); a value the
    model makes up costs its uncertain choices (an order id nobody gave: about 0.3 on the 0.5B model,
    0.8 on the 1.5B, which is surer of its placeholder `12345`: set a policy's floor for the model it
    runs), and text the model composes costs every word it could have written otherwise (an email body:
    near 0, however good). The product, not the geometric mean: the mean of `12345`'s tokens is 0.85,
    because once `1` is chosen the rest of an invented id follows, so a made-up call would pass any floor
    a user would set.

    Args:
        text: the call as generated, `{"name": ..., "arguments": {...}}` (or a truncated start of one).
        token_ends: for each generated token, where its text ends in `text`.
        logprobs: for each generated token, the natural log of its probability.

    Returns:
        The confidence in [0, 1]; None when no token was generated. When no token overlaps a value
        (only for a call cut off early), every token counts.
    """
    if not logprobs:
        return None
    spans = _value_spans(text)
    chosen: list[float] = []
    start = 0
    for end, logprob in zip(token_ends, logprobs, strict=True):
        # a token ending a multi-byte character's first bytes has no text yet: it belongs where it stands
        last = max(end, start + 1)
        if any(start < value_end and last > value_start for value_start, value_end in spans):
            chosen.append(logprob)
        start = end
    total = math.fsum(chosen or logprobs)
    if math.isnan(total):
        return None
    # a log-probability rounds to a hair above 0 when its token holds all the mass
    return min(1.0, math.exp(total))


def _value_spans(text: str) -> list[tuple[int, int]]:
    """Where the scalar values of a JSON text are: strings without their quotes, numbers, literals.

    Object keys are left out. Truncated text is scanned as far as it goes (an unfinished value runs to
    the end).
    """
    spans: list[tuple[int, int]] = []
    in_object: list[bool] = []
    expect_key = False
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char in "{[":
            in_object.append(char == "{")
            expect_key = char == "{"
            i += 1
        elif char in "}]":
            if in_object:
                in_object.pop()
            expect_key = False
            i += 1
        elif char == ",":
            expect_key = bool(in_object and in_object[-1])
            i += 1
        elif char == ":":
            expect_key = False
            i += 1
        elif char.isspace():
            i += 1
        elif char == '"':
            end = i + 1
            while end < n and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            if not expect_key:
                spans.append((i + 1, min(end, n)))
            i = end + 1
        else:
            end = i
            while end < n and text[end] not in ",}] \n":
                end += 1
            spans.append((i, end))
            i = end
    return spans


# -- the grammar --------------------------------------------------------------------------------

# what json.dumps writes after "," and ":", and nothing elsewhere, so a call re-renders identically
_SEPARATORS: Final = (('"," space', '", "'), ('":" space', '": "'))
# JSON string characters without raw control characters (json.dumps escapes them) or escaped "/"
_CHAR_RULE: Final = (
    r'[^"\\\x7F\x00-\x1F] | "\\" (["\\bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
)


def tool_call_grammar(tools: Sequence[ToolDefinition]) -> str:
    """A GBNF grammar for one call: `{"name": <tool>, "arguments": <its schema>}` for any of `tools`.

    Whitespace is fixed to what `json.dumps` writes, so the call the model writes is, byte for byte,
    the call the chat template renders back into the next prompt (and the KV cache stays valid).
    A tool whose schema the converter cannot express gets free-form JSON object arguments.

    Raises:
        ImportError: llama-cpp-python is not installed.
    """
    schemas: list[tuple[str, dict[str, Any]]] = []
    for tool in tools:
        try:
            _schema_to_gbnf([(tool.name, tool.parameters)])
        except Exception:  # the converter asserts (or raises anything) on schemas it cannot express
            schemas.append((tool.name, {"type": "object"}))
        else:
            schemas.append((tool.name, tool.parameters))
    return _tighten(_schema_to_gbnf(schemas))


def _schema_to_gbnf(tools: list[tuple[str, dict[str, Any]]]) -> str:
    try:
        from llama_cpp.llama_grammar import SchemaConverter
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    converter = SchemaConverter(
        prop_order={"name": 0, "arguments": 1}, allow_fetch=False, dotall=False, raw_pattern=False
    )
    alternatives = []
    for index, (name, schema) in enumerate(tools):
        # each tool's "#/$defs/..." refers to its own schema, so each is resolved under its own URL
        resolved = converter.resolve_refs(copy.deepcopy(schema), f"tool-{index}")
        alternatives.append(
            {
                "type": "object",
                "properties": {"name": {"const": name}, "arguments": resolved},
                "required": ["name", "arguments"],
            }
        )
    converter.visit({"anyOf": alternatives} if len(alternatives) > 1 else alternatives[0], "")
    return converter.format_grammar()


def _tighten(grammar: str) -> str:
    rules: dict[str, str] = {}
    for line in grammar.splitlines():
        name, _, rule = line.partition(" ::= ")
        rules[name] = rule
    rules["space"] = '""'
    if "char" in rules:
        rules["char"] = _CHAR_RULE
    text = "\n".join(f"{name} ::= {rule}" for name, rule in rules.items())
    for loose, tight in _SEPARATORS:
        text = text.replace(loose, tight)
    return text


def _physical_cores() -> int:
    """Physical cores among the CPUs this process may use (hyper-threads share a core's units)."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # not Linux: assume two hardware threads per core, as llama-cpp-python does
        return max((os.cpu_count() or 2) // 2, 1)
    cores = set()
    for cpu in cpus:
        try:
            cores.add(
                Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip()
            )
        except OSError:
            cores.add(str(cpu))
    return max(len(cores), 1)
