"""Optional LLM-as-judge: is the answer faithful to its passages, and correct?

Only used with `rag eval --judge` and an OpenAI-compatible endpoint (RAG_LLM_URL). A reply
that is not the JSON asked for counts as a parse failure and is reported, never guessed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from ..config import AnswerSettings
from ..errors import LLMError, UsageError

PROMPT = """You grade answers of a question-answering system.

Question: {question}
Reference answer: {reference}
System answer: {answer}

Passages the system answered from:
{passages}

Reply with one JSON object and nothing else:
{{"faithful": true or false, "correct": true or false}}
"faithful": every claim of the system answer is supported by the passages.
"correct": the system answer agrees with the reference answer."""

_OBJECT = re.compile(r"\{.*?\}", re.S)


def parse_verdict(reply: str) -> dict[str, bool] | None:
    """{"faithful", "correct"} from the judge's reply, or None when it is not that JSON."""
    for m in _OBJECT.finditer(reply or ""):
        try:
            obj = json.loads(m.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and all(
            isinstance(obj.get(f), bool) for f in ("faithful", "correct")
        ):
            return {"faithful": obj["faithful"], "correct": obj["correct"]}
    return None


class Judge:
    def __init__(self, settings: AnswerSettings) -> None:
        if not settings.llm_url:
            raise UsageError("--judge needs an LLM endpoint: set RAG_LLM_URL (and RAG_LLM_MODEL)")
        from openai import OpenAI

        self.model = settings.llm_model or "default"
        self.client = OpenAI(
            base_url=settings.llm_url,
            api_key=settings.api_key or "none",
            timeout=settings.timeout,
            max_retries=settings.max_retries,
        )

    def __call__(
        self, question: str, reference: str, answer: str, passages: Sequence[str]
    ) -> dict[str, Any]:
        """{"faithful": bool|None, "correct": bool|None, "error": str|None}."""
        text = "\n\n".join(f"[{i}] {p}" for i, p in enumerate(passages, start=1)) or "(none)"
        prompt = PROMPT.format(
            question=question, reference=reference or "(none)", answer=answer, passages=text
        )
        try:
            reply = self.client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                temperature=0.0,
            )
        except Exception as e:
            raise LLMError(
                f"the judge at {self.client.base_url} failed ({type(e).__name__}: {e})"
            ) from e
        content = (reply.choices[0].message.content or "") if reply.choices else ""
        verdict = parse_verdict(content)
        if verdict is None:
            return {
                "faithful": None,
                "correct": None,
                "error": f"unparsable reply: {content[:200]!r}",
            }
        return {**verdict, "error": None}
