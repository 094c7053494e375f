"""Text helpers every stage shares: words, stop words, the stemmer, content terms.

One definition of a "word" for the keyword index, the answerer, the verifier and the
follow-up rewriter, so that what one stage matches the others match too.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been
    before being below between both but by can could did do does doing down during each
    few for from further had has have having he her here hers herself him himself his
    how i if in into is it its itself just me more most my myself no nor not now of off
    on once only or other our ours ourselves out over own same she should so some such
    than that the their theirs them themselves then there these they this those through
    to too under until up very was we were what when where which while who whom whose
    why will with would you your yours yourself yourselves according document documents
    text say says said tell told mention mentioned describe described give given one
    ones did does do make made get got use used way ways
    """.split()  # noqa: SIM905
)
QUESTION_WORDS = frozenset(
    "what how why who whom whose when where which whether".split()  # noqa: SIM905
)
# a word, with inner apostrophes, dots and hyphens ("U.S.", "co-op", "Italy's")
WORD = re.compile(r"[\w$€£¥%]+(?:[.'’-][\w]+)*", re.U)


@functools.cache
def stemmer() -> Any:
    """The English Snowball stemmer (PyStemmer), made once."""
    import Stemmer

    return Stemmer.Stemmer("english")


def content_terms(text: str) -> list[str]:
    """The text's stemmed words, lower case, without stop words and single letters."""
    words = [w.lower().strip(".’'-") for w in WORD.findall(text)]
    words = [w for w in words if w and w not in STOPWORDS and not (len(w) == 1 and w.isalpha())]
    return list(stemmer().stemWords(words))


def display_title(source: str, title: str | None, text: str, limit: int = 60) -> str:
    """How to name a document to people: its own title, or when it has none (the loader
    fell back to the file name) its opening words, "Darcy Drought-Behares, Carnegie…".
    For display only: the title embedded with each chunk stays what the loader gave."""
    t = " ".join((title or "").split())
    if t and t.casefold() not in (Path(source).name.casefold(), Path(source).stem.casefold()):
        return t
    lines = text.lstrip()[: limit * 40].splitlines()
    first = next((line for line in lines if any(ch.isalnum() for ch in line)), "")
    words = " ".join(first[: limit * 4].split())
    if len(words) <= limit:
        return words or t
    cut = words[: limit + 1].rsplit(" ", 1)[0] if " " in words[:limit] else words[:limit]
    return (cut.rstrip(",;:–—- ") or words[:limit]) + "…"
