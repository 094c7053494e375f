"""The Gradio app of `rag serve`: Chat, Documents, Evaluation, Status.

Gradio is imported only inside `serve` (importing it takes seconds).
"""

from __future__ import annotations

from pathlib import Path

from ..config import Settings

__all__ = ["serve"]


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    docs_dir: Path = Path("documents"),
    api_key: str | None = None,
    ui: bool = True,
) -> None:
    """Serve the app and the API (/v1) on http://host:port until interrupted (Ctrl-C, kill).
    Nothing is fetched from the internet."""
    import socket
    import sys
    import threading

    import click
    import uvicorn

    from ..api import build_api
    from ..errors import RagError
    from .app import configured_llm, local_models, mount
    from .engine import Engine

    # a port in use is said at once, before models load (their warm-up would then fail
    # noisily at shutdown)
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as e:
            raise RagError(
                f"cannot serve on {host}:{port} ({e.strerror or e}); choose another --port"
            ) from None
    engine = Engine(settings, docs_dir)
    server = None
    thread = None
    try:
        app = build_api(engine, api_key=api_key, configured=configured_llm(settings),
                        local=local_models(settings.answer.llm_gguf))  # fmt: skip
        if ui:
            app = mount(app, engine, api_key)
        engine.warm_up()  # loads the model while the server starts: the first answer is quick
        config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                                access_log=False, lifespan="on")  # fmt: skip
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="rag-http", daemon=True)
        thread.start()
        while not server.started:
            if not thread.is_alive():
                raise RagError(f"cannot serve on {host}:{port}; choose another --port")
            thread.join(0.05)
        url = f"http://{host}:{port}/"
        what = "the app and the API" if ui else "the API"
        click.echo(
            f"rag is serving {url}  ({what}: {url}v1; uploads are saved in {engine.docs_dir};"
            " Ctrl+C to stop)"
        )
        sys.stdout.flush()
        while thread.is_alive():
            thread.join(0.5)
    finally:
        if server is not None:
            server.should_exit = True  # on `kill` and Ctrl-C too
        if thread is not None:
            thread.join(10)
        engine.close()
