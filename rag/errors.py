"""One exception hierarchy. Every message is one line that says what to do."""

from __future__ import annotations


def shell(*words: object) -> str:
    """Words as a shell reads them, for the commands a message names: a path with a space
    (or a quote) in it stays one argument when the command is copied."""
    import shlex

    return " ".join(shlex.quote(str(w)) for w in words)


class RagError(Exception):
    """Base class: the CLI prints `error: <message>` and exits 1, without a traceback."""

    exit_code = 1


class UsageError(RagError):
    """A bad argument or input file given by the user."""

    exit_code = 2


class IndexMissing(RagError):
    """No index where one was expected."""


class IndexMismatch(RagError):
    """The index was built with other settings or another embedding model."""


class StoreError(RagError):
    """Chroma (embedded or server) failed or cannot be reached."""


class EmbeddingError(RagError):
    """The embedding model could not be loaded or called."""


class LLMError(RagError):
    """The LLM endpoint is down, timed out, or answered with something unusable."""


class ChromaTimeout(StoreError):
    """A Chroma call did not return in time (`chroma_timeout`): not damage, nothing to repair."""


class DiskFull(StoreError):
    """The disk holding the index is full: free space and run the same command again."""


class IndexDamaged(RagError):
    """Part of the index (catalog, vectors) is unreadable; the message names the repair."""


class ManifestDamaged(IndexDamaged):
    """manifest.json is missing, unreadable or hand-edited; `doctor --repair` restores it."""


class IndexBusy(RagError):
    """Another process is writing to the index (it holds the index's write lock)."""


class Interrupted(RagError):
    """Ctrl-C during a long command; the message says what was kept and what to run."""

    exit_code = 130
