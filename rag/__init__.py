"""rag: offline retrieval-augmented Q&A whose answers cite their passages.

from rag import Rag, Settings
rag = Rag(Settings.from_env())
rag.ingest(["seeds/"])
print(rag.ask("What did Japan pledge?").answer)
"""

from .config import Settings
from .errors import RagError
from .pipeline import Rag
from .types import Answer, Chunk, Citation, Document, Hit, IngestReport

__all__ = [
    "Answer",
    "Chunk",
    "Citation",
    "Document",
    "Hit",
    "IngestReport",
    "Rag",
    "RagError",
    "Settings",
]
