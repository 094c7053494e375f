"""Question → the question and a hypothetical answer, searched for together (HyDE).

A question in the user's words ("make my download give up if the server stalls") and the
passage that answers it ("the timeout parameter specifies a timeout in seconds for blocking
operations") can share no word and sit far apart for the embedder. An instruct model asked
to write the passage that would answer writes it in the vocabulary such documents use,
naming the API or the term the user did not know. Its passage goes to the first stage
(embedder and BM25) beside the question; nothing else reads it. It may be wrong, so it is
never given as the answer nor cited, and the documents' text never enters its prompt.

Measured (bench/hyde.py, docs/benchmarks.md "A hypothetical answer"): with the bundled 1.5B,
pydocs hit@5 of the fused order 0.679 → 0.893 on the tune split and 0.722 → 0.833 on the
held-out one; on paraphrased questions 0.273 → 0.909 and 0.429 → 0.714.
"""

from __future__ import annotations

import logging
import re
from typing import Protocol

from .errors import LLMError

log = logging.getLogger(__name__)

PROMPT = (
    "Write two or three sentences, as a passage of reference documentation would, that "
    "answer the question below. Use the words such a document would use. Do not say you "
    "are unsure; write the passage only.\n\nQuestion: {question}"
)
MAX_TOKENS = 96  # two or three sentences; ~8 s with the 1.5B on 2 cores, ~3 s with the 0.5B
MAX_CHARS = 800  # a reply that runs on is cut: the question must not be drowned out


class Completer(Protocol):
    def complete(self, messages: list[dict[str, str]], max_tokens: int = 256) -> str: ...


def hypothesis(llm: Completer, question: str) -> str:
    """The passage `llm` writes as an answer to `question`; "" when it fails (the search
    then reads the question alone, and the warning is logged)."""
    if not question.strip():
        return ""
    messages = [{"role": "user", "content": PROMPT.format(question=question.strip())}]
    try:
        text = llm.complete(messages, max_tokens=MAX_TOKENS)
    except LLMError as e:
        log.warning("%s; searching for the question alone", e)
        return ""
    text = re.sub(r"\s+", " ", text).strip()
    return text[:MAX_CHARS]


def expanded(question: str, hypothesis: str | None) -> str:
    """The text the first stage searches for: the question, then the hypothesis if any."""
    return f"{question}\n{hypothesis}" if hypothesis else question
