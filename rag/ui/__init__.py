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
) -> None:
    """Serve the app on http://host:port until interrupted. Nothing is fetched from the internet."""
    import socket
    import sys

    import click

    from ..errors import RagError
    from .app import build_app, launch
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
    demo = None
    try:
        demo = build_app(engine)
        engine.warm_up()  # loads the model while the server starts: the first answer is quick
        url = launch(demo, host, port, settings.load.max_file_mb)
        click.echo(
            f"rag is serving {url}  (uploads are saved in {engine.docs_dir}; Ctrl+C to stop)"
        )
        sys.stdout.flush()
        demo.block_thread()
    finally:
        if demo is not None:
            demo.close()  # on `kill` too (Gradio closes only on Ctrl-C): else its server lives on
        engine.close()
