"""The public names of tether.guardrails and tether.embeddings are pinned: a change is a deliberate one."""

from __future__ import annotations

import tether.embeddings
import tether.guardrails

GUARDRAILS = [
    "ABUSE_LANGUAGES", "ACTIONS", "DEFAULT_REFUSAL", "PII_ENTITIES", "AbuseGuard", "Action", "AmountLimit",
    "ArgumentConstraint", "CanaryGuard", "DomainAllowlist", "ExfiltrationGuard", "Guard", "GuardContext",
    "GuardResult", "GuardStack", "GuardrailsConfig", "InjectionClassifier", "InjectionClassifierGuard",
    "InjectionGuard", "InjectionRule", "LogisticHead", "PIIEntity", "PIIGuard", "PathAllowlist",
    "ReadOnlySQL", "SchemaGuard", "SecretsGuard", "SensitiveTermsGuard", "Source", "Span", "Stage",
    "TextGuard",
    "ToolArgumentsGuard", "ToolCallCheck", "ToolScopeGuard", "TopicScopeGuard", "Verdict", "build_stack",
    "canary_instruction", "check_action", "classifier_available", "default_injection_rules", "default_stack",
    "excerpt", "find_pii",
    "find_secrets", "make_canary", "scan", "strongest",
]  # fmt: skip
EMBEDDINGS = [
    "Embedder",
    "HashingEmbedder",
    "MiniLMEmbedder",
    "cosine_similarity",
    "default_model_dir",
    "require_numpy",
]


def test_guardrails_exports() -> None:
    assert tether.guardrails.__all__ == GUARDRAILS
    for name in GUARDRAILS:
        assert hasattr(tether.guardrails, name), name


def test_embeddings_exports() -> None:
    assert tether.embeddings.__all__ == EMBEDDINGS


def test_ground_floor_imports_nothing_above() -> None:
    import ast
    from pathlib import Path

    allowed = {"tether.exceptions", "tether.embeddings"}
    for package in ("guardrails", "embeddings"):
        root = Path(tether.guardrails.__file__).parent.parent / package
        for path in root.glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tether"):
                    assert node.module in allowed, f"{path.name} imports {node.module}"
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        assert not alias.name.startswith("tether") or alias.name in allowed, path.name
