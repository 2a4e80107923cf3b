"""`tether models serve`: the embedded model as an OpenAI-compatible server."""

from __future__ import annotations

import click

from ._main import _fail, _run_async, cli

__all__: list[str] = []

_DEFAULT_SERVED = "local:qwen2.5-coder-1.5b"


@cli.group()
def models() -> None:
    """Serve the embedded models."""


@models.command("serve")
@click.option(
    "--model",
    "spec",
    default=_DEFAULT_SERVED,
    show_default=True,
    help="The embedded model to serve: local:qwen2.5-coder-1.5b or local:qwen2.5-coder-0.5b.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0 or a LAN address serves other machines; there is no authentication).",
)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="TCP port.")
@click.option(
    "--n-ctx", default=8192, show_default=True, type=click.IntRange(256), help="Context window in tokens."
)
@click.option(
    "--threads",
    default=None,
    type=click.IntRange(1),
    help="CPU threads for llama.cpp (default: one per core).",
)
@click.option(
    "--timeout",
    "timeout_s",
    default=300.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Seconds one answer may take before the request fails with 504.",
)
def models_serve(spec: str, host: str, port: int, n_ctx: int, threads: int | None, timeout_s: float) -> None:
    """Serve an embedded model with OpenAI's chat-completions API, real tool_calls included.

    Any OpenAI client can use it at http://HOST:PORT/v1; in tether, as the model string
    openai:qwen2.5-coder-1.5b@http://127.0.0.1:8080/v1. One answer is generated at a time.
    """
    provider, _, name = spec.partition(":")
    if provider != "local" or not name:
        _fail(
            f"--model {spec!r} is not an embedded model; "
            "serve local:qwen2.5-coder-1.5b or local:qwen2.5-coder-0.5b"
        )
    try:
        import uvicorn  # noqa: F401 - checked here so that a missing extra fails before the weights load

        from ..models.llamacpp import LlamaCppModel
        from ..models.serve import serve
    except ImportError as exc:
        _fail(
            f"{exc}; tether models serve needs the local and serve extras: pip install 'tether[local,serve]'"
        )
    model = LlamaCppModel(name, n_ctx=n_ctx, n_threads=threads)
    click.echo(f"loading {spec}...", err=True)
    # loaded before the port is bound, so that missing or corrupt weights end the command with the fix
    _run_async(model.load)
    click.echo(f"serving {spec} at http://{host}:{port}/v1 (model id {name!r}); Ctrl-C stops", err=True)
    serve(model, host=host, port=port, timeout_s=timeout_s)
