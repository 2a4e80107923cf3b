"""Train the injection classifier's head on train.jsonl; write src/tether/guardrails/injection_head.json.

    python bench/data/guardrails/train_injection_head.py

Deterministic: windows, the validation split and the solver have no randomness beyond a fixed seed.
Long injection texts hold their attack in one part (a DAN preamble, a line in an email), so training is
multiple-instance in two rounds: round 0 learns from texts that fit one window; round 1 adds, for each
longer injection, the window round 0 finds most suspicious, and every window of every benign text.
The threshold is set on a validation slice of the training sources (20 %, by id hash) for a benign
false-positive rate of at most 2 %, then the head is refitted on all training rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# one BLAS thread: on a shared machine, OpenBLAS threads spinning against other processes run 5x slower
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT / "src"))

from tether.embeddings import MiniLMEmbedder  # noqa: E402  (src is put on the path just above)
from tether.guardrails._classifier import InjectionClassifier, LogisticHead, split_windows  # noqa: E402

OUT = ROOT / "src" / "tether" / "guardrails" / "injection_head.json"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tether" / "bench-guardrails"
WINDOW = 200
MAX_BENIGN_WINDOWS = 6
MAX_CANDIDATES = 8
TARGET_FPR = 0.02


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, weights: np.ndarray) -> tuple[np.ndarray, float]:
    """Weighted, L2-regularised logistic regression by Newton's method (385 parameters: exact and fast)."""
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    theta = np.zeros(d + 1)
    reg = np.full(d + 1, l2)
    reg[-1] = 0.0  # the intercept is not shrunk
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ theta, -50, 50)))
        grad = xb.T @ (weights * (p - y)) + reg * theta
        hess = (xb * (weights * p * (1 - p))[:, None]).T @ xb + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-7:
            break
    return theta[:-1], float(theta[-1])


def _embed_cached(embedder: MiniLMEmbedder, texts: list[str]) -> np.ndarray:
    """Embed windows, reusing vectors cached per window (a data change re-embeds only what changed)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"windows-{embedder.name.replace('/', '_')}.npz"
    cache: dict[str, np.ndarray] = dict(np.load(path)) if path.exists() else {}
    keys = [hashlib.sha256(t.encode()).hexdigest()[:24] for t in texts]
    missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in cache}.items())
    started = time.perf_counter()
    for i in range(0, len(missing), 256):
        chunk = missing[i : i + 256]
        for (k, _), vec in zip(chunk, embedder.embed([t for _, t in chunk]), strict=True):
            cache[k] = vec
        print(
            f"embedded {i + len(chunk)}/{len(missing)} new windows, {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
    if missing:
        np.savez(path, **cache)
    return np.vstack([cache[k] for k in keys])


def _validation(row_id: str) -> bool:
    return int(hashlib.sha256(row_id.encode()).hexdigest(), 16) % 5 == 0


def _instances(
    rows: list[dict[str, Any]], classifier: InjectionClassifier
) -> list[tuple[int, str, int, bool]]:
    """(row index, window text, label, is_candidate_of_multiwindow_injection)."""
    out: list[tuple[int, str, int, bool]] = []
    for i, r in enumerate(rows):
        text = r["text"]
        windows = split_windows(text, WINDOW)
        if r["label"] == "benign":
            for s, e in windows[:MAX_BENIGN_WINDOWS]:
                out.append((i, text[s:e], 0, False))
        elif len(windows) == 1:
            out.append((i, text[windows[0][0] : windows[0][1]], 1, False))
        else:
            classifier.max_windows = MAX_CANDIDATES
            for s, e in classifier.select_windows(text):
                out.append((i, text[s:e], 1, True))
    return out


def _fit(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    pos = max(1, int(y.sum()))
    neg = max(1, len(y) - pos)
    # balanced classes: each class carries half the loss whatever its count
    w = np.where(y == 1, len(y) / (2 * pos), len(y) / (2 * neg))
    return fit_logistic(x, y, l2, w)


def _row_scores(inst: list[tuple[int, str, int, bool]], probs: np.ndarray, n_rows: int) -> np.ndarray:
    best = np.zeros(n_rows)
    for (i, *_), p in zip(inst, probs, strict=True):
        best[i] = max(best[i], p)
    return best


def main() -> None:
    """Train, pick the threshold, refit and write the head."""
    rows = [json.loads(line) for line in (HERE / "train.jsonl").read_text().split("\n") if line.strip()]
    embedder = MiniLMEmbedder()
    classifier = InjectionClassifier(
        embedder,
        LogisticHead(weights=(0.0,) * 384, bias=0.0, threshold=0.5, embedder=embedder.name, metadata={}),
    )
    inst = _instances(rows, classifier)
    emb = _embed_cached(embedder, [t for _, t, _, _ in inst])
    y_all = np.array([lab for _, _, lab, _ in inst], dtype=np.float64)
    cand = np.array([c for *_, c in inst])
    is_val = np.array([_validation(rows[i]["id"]) for i, *_ in inst])
    labels = np.array([1 if r["label"] == "injection" else 0 for r in rows])
    val_rows = np.array([_validation(r["id"]) for r in rows])

    def train(mask: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
        # round 0: single-window texts; round 1: plus each long injection's most suspicious window
        r0 = mask & ~cand
        w0, b0 = _fit(emb[r0], y_all[r0], l2)
        p0 = 1 / (1 + np.exp(-(emb @ w0 + b0)))
        keep = r0.copy()
        best_of: dict[int, int] = {}
        for k, (i, _, _, c) in enumerate(inst):
            if c and mask[k] and (i not in best_of or p0[k] > p0[best_of[i]]):
                best_of[i] = k
        keep[list(best_of.values())] = True
        return _fit(emb[keep], y_all[keep], l2)

    results = []
    for l2 in (0.1, 0.3, 1.0, 3.0, 10.0):
        w, b = train(~is_val, l2)
        probs = 1 / (1 + np.exp(-(emb @ w + b)))
        scores = _row_scores(inst, probs, len(rows))
        benign_val = np.sort(scores[val_rows & (labels == 0)])
        threshold = float(benign_val[int(np.ceil((1 - TARGET_FPR) * len(benign_val))) - 1]) + 1e-6
        threshold = max(threshold, 0.5)
        recall = float((scores[val_rows & (labels == 1)] >= threshold).mean())
        fpr = float((scores[val_rows & (labels == 0)] >= threshold).mean())
        results.append((recall, -fpr, l2, threshold))
        print(
            f"l2={l2:<5} threshold={threshold:.3f} val recall={recall:.3f} val fpr={fpr:.3f}", file=sys.stderr
        )
    recall, neg_fpr, l2, threshold = max(results)
    w, b = train(np.ones(len(inst), dtype=bool), l2)
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        counts.setdefault(r["source"], {}).setdefault(r["label"], 0)
        counts[r["source"]][r["label"]] += 1
    licences = sorted({f"{r['source']}: {r['license']}" for r in rows})
    head = LogisticHead(
        weights=tuple(float(v) for v in w),
        bias=b,
        threshold=threshold,
        embedder=embedder.name,
        metadata={
            "trained_on": "bench/data/guardrails/train.jsonl (rebuilt by bench/data/guardrails/build.py)",
            "rows": len(rows),
            "windows": len(inst),
            "window_chars": WINDOW,
            "l2": l2,
            "validation": {"recall": round(recall, 4), "fpr": round(-neg_fpr, 4), "target_fpr": TARGET_FPR},
            "sources": counts,
            "licences": licences,
        },
    )
    head.save(OUT)
    print(f"wrote {OUT.relative_to(ROOT)} (l2={l2}, threshold={threshold:.3f})", file=sys.stderr)


if __name__ == "__main__":
    main()
