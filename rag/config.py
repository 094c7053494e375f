"""Settings: one frozen object, grouped by pipeline stage.

`Settings.from_env()` is the only place that reads environment variables; everything
else receives a `Settings`. Override single fields with `dataclasses.replace`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

Mode = Literal["dense", "keyword", "hybrid"]
MODES: tuple[Mode, ...] = ("dense", "keyword", "hybrid")


@dataclass(frozen=True)
class LoadSettings:
    max_file_mb: float = 50.0  # bigger files are skipped and reported, never read whole
    # Sphinx's `_sources/x.rst.txt` beside its rendered `x.html`: the same page in markup.
    # Left out (and reported) unless this is set; see loaders.source_copies
    source_copies: bool = False


@dataclass(frozen=True)
class ChunkSettings:
    size: int = 256  # embedding-model tokens per chunk, context prefix and [CLS]/[SEP] included
    overlap: int = 32  # tokens repeated from the end of the previous chunk (whole sentences)


@dataclass(frozen=True)
class EmbedSettings:
    # "minilm-int8" (bundled), a folder holding model.onnx + tokenizer.json, or with `url`
    # the model name an OpenAI-compatible /v1/embeddings endpoint serves.
    model: str = "minilm-int8"
    url: str | None = None
    batch_size: int = 8  # measured: as fast as 32 on 2 cores, a third of the peak memory
    threads: int = 2


@dataclass(frozen=True)
class StoreSettings:
    index_dir: Path = Path("index")
    chroma_url: str | None = None  # http://host:port of a `chroma run` server
    collection: str = "rag"
    # seconds one Chroma call may take before it is given up (0: wait forever): chromadb's
    # native code has blocked forever after a failed compaction on a full disk
    chroma_timeout: float = 120.0


@dataclass(frozen=True)
class RetrieveSettings:
    mode: Mode = "hybrid"
    k: int = 5
    candidates: int = 50  # depth of each list that is fused (deep lists fuse better)
    fusion: Literal["score", "rrf"] = "score"  # normalised scores beat RRF here: bench/
    alpha: float = 0.5  # weight of the dense score in score fusion
    # a chunk gains this share of its two neighbours' mean fused score (0 turns it off):
    # an answer often spills over a chunk boundary, and its neighbours then match too
    neighbours: float = 0.3
    rrf_k: int = 60
    # hybrid only: the cross-encoder reorders this many of the best fused candidates (at least
    # the k returned; 0 turns it off): MRR@10 0.859 -> 0.929 on seeds, 0.823 -> 0.917 held-out
    rerank: int = 10
    rerank_window: int = 96  # tokens per window a chunk is read in (it scores its best one)
    # with an LLM: it writes a hypothetical answer, searched for beside the question
    # (expand.py). Off by default: it costs an LLM call per search (~8 s with the 1.5B)
    expand: bool = False


@dataclass(frozen=True)
class AnswerSettings:
    max_sentences: int = 3
    # candidates reranked before the answerer reads its k passages (0: it reads the fused
    # order). Off: the extractive answerer picks its own sentences from the passages, and from
    # the reranked ones it answered fewer questions (key accuracy 0.810 vs 0.857 on seeds,
    # 0.667 vs 0.792 held-out): the cross-encoder fills the top with one subject's passages
    rerank: int = 0
    # below this evidence score the extractive answerer refuses (calibrated on evals/)
    min_evidence: float = 0.33
    # the cross-encoder judges the chosen sentences, and below `min_judge` (its logit) the
    # answer is a refusal. Off: on our sets it refused more answerable questions than
    # unanswerable ones at most thresholds (docs/evaluation.md#calibration)
    judge: bool = False
    min_judge: float = -9.0  # fitted on the tune sets by bench/calibrate.py
    # with an LLM: the cross-encoder reads the question with the model's verified answer and
    # with the quoted one, and the closer is shown (the higher logit; ties to the model).
    # Off: it kept 6 more right answers of the 0.5B on the seeds but none on the held-out
    # set, none of the 1.5B's, and it halved the 1.5B's share of generated answers
    pick: bool = False
    # with an LLM: the quoted answer is shown to the model after the passages, as a draft to
    # check and rewrite. The 1.5B then wrote 25-28 of 42 seeds answers instead of 20-21, 35-36
    # right either way; the 0.5B got 30-31 right instead of 25 (docs/evaluation.md, "The
    # quoted answer as a draft"; bench/llm_prompts.py)
    draft: bool = True
    # an LLM is shown about this many words of each passage (its best sentences): 5 whole
    # passages are ~1,600 prompt tokens, 35-50 s of prefill for a 1.5B model on 2 cores
    passage_words: int = 80
    llm_url: str | None = None
    llm_model: str | None = None
    llm_gguf: Path | None = None
    api_key: str | None = None
    timeout: float = 60.0
    max_retries: int = 1
    unsupported: Literal["remove", "flag"] = "remove"
    temperature: float = 0.1


@dataclass(frozen=True)
class Settings:
    load: LoadSettings = field(default_factory=LoadSettings)
    chunk: ChunkSettings = field(default_factory=ChunkSettings)
    embed: EmbedSettings = field(default_factory=EmbedSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    retrieve: RetrieveSettings = field(default_factory=RetrieveSettings)
    answer: AnswerSettings = field(default_factory=AnswerSettings)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Defaults, overridden by RAG_* variables (and OPENAI_API_KEY)."""
        e = os.environ if env is None else env
        s = cls()

        def get(name: str) -> str | None:
            value = e.get(name)
            return value if value not in (None, "") else None

        if v := get("RAG_INDEX"):
            s = s.with_(store={"index_dir": Path(v)})
        if v := get("RAG_CHROMA_URL"):
            s = s.with_(store={"chroma_url": v})
        if v := get("RAG_CHROMA_TIMEOUT"):
            timeout = _number("RAG_CHROMA_TIMEOUT", v, example="120", least=0)
            s = s.with_(store={"chroma_timeout": timeout})
        if v := get("RAG_MAX_FILE_MB"):
            s = s.with_(load={"max_file_mb": float(v)})
        if v := get("RAG_SOURCE_COPIES"):
            s = s.with_(load={"source_copies": _flag("RAG_SOURCE_COPIES", v)})
        if v := get("RAG_CHUNK_SIZE"):
            s = s.with_(chunk={"size": int(v)})
        if v := get("RAG_CHUNK_OVERLAP"):
            s = s.with_(chunk={"overlap": int(v)})
        if v := get("RAG_EMBED_MODEL"):
            s = s.with_(embed={"model": v})
        if v := get("RAG_EMBED_URL"):
            s = s.with_(embed={"url": v})
        if v := get("RAG_RERANK"):
            s = s.with_(retrieve={"rerank": _count("RAG_RERANK", v)})
        if v := get("RAG_EXPAND"):
            s = s.with_(retrieve={"expand": _flag("RAG_EXPAND", v)})
        if v := get("RAG_ANSWER_RERANK"):
            s = s.with_(answer={"rerank": _count("RAG_ANSWER_RERANK", v)})
        if v := get("RAG_JUDGE"):
            s = s.with_(answer={"judge": _flag("RAG_JUDGE", v)})
        if v := get("RAG_PICK"):
            s = s.with_(answer={"pick": _flag("RAG_PICK", v)})
        if v := get("RAG_DRAFT"):
            s = s.with_(answer={"draft": _flag("RAG_DRAFT", v)})
        if v := get("RAG_MIN_JUDGE"):
            s = s.with_(answer={"min_judge": _number("RAG_MIN_JUDGE", v)})
        if v := get("RAG_LLM"):
            s = s.with_(answer=llm_choice("RAG_LLM", v))
        if v := get("RAG_LLM_URL"):
            s = s.with_(answer={"llm_url": v})
        if v := get("RAG_LLM_MODEL"):
            s = s.with_(answer={"llm_model": v})
        if v := get("RAG_LLM_GGUF"):
            s = s.with_(answer={"llm_gguf": Path(v)})
        if v := get("OPENAI_API_KEY"):
            s = s.with_(answer={"api_key": v})
        return s

    def with_(self, **groups: dict[str, Any]) -> Settings:
        """A copy with some fields of some groups replaced: `s.with_(retrieve={"k": 10})`."""
        changes = {name: replace(getattr(self, name), **values) for name, values in groups.items()}
        return replace(self, **changes)


LLM_NAMES = ("extractive", "local", "local-small")  # "local*": the bundled models (rag.models)


def llm_choice(name: str, value: str) -> dict[str, Any]:
    """The answer settings `--llm VALUE` / `RAG_LLM=VALUE` stand for: extractive (no LLM), or
    a bundled model, which is started with llama-server when first needed."""
    from .errors import UsageError

    if value == "extractive":
        return {"llm_url": None, "llm_gguf": None, "llm_model": None}
    if value not in LLM_NAMES:
        raise UsageError(f"{name}={value!r} is not one of {', '.join(LLM_NAMES)}: choose one, "
                         "or give an endpoint with --llm-url / RAG_LLM_URL")  # fmt: skip
    from .models import model_path

    return {"llm_url": None, "llm_gguf": model_path(value), "llm_model": None}


def _count(name: str, value: str) -> int:
    from .errors import UsageError

    try:
        n = int(value)
    except ValueError:
        n = -1
    if not 0 <= n <= 200:
        raise UsageError(f"{name}={value!r} is not a count from 0 (off) to 200: set one")
    return n


def _flag(name: str, value: str) -> bool:
    from .errors import UsageError

    low = value.strip().lower()
    if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise UsageError(f"{name}={value!r} is not on or off: set it to 1 or 0")
    return low in ("1", "true", "yes", "on")


def _number(name: str, value: str, example: str = "-6", least: float | None = None) -> float:
    from .errors import UsageError

    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or (least is not None and number < least):
        kind = "a number" if least is None else f"a number of at least {least:g}"
        raise UsageError(f"{name}={value!r} is not {kind}: set one, e.g. {name}={example}")
    return number


def apply_offline_env() -> None:
    """Make every library we load stay offline and silent, before any of them is imported.

    Chroma's, Gradio's and onnxruntime's telemetry and Hugging Face hub look-ups are off;
    llama-index reads its *bundled* tiktoken/NLTK data only while these two are unset.
    """
    os.environ["ANONYMIZED_TELEMETRY"] = "False"
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["DO_NOT_TRACK"] = "1"
    # onnxruntime >= 1.29 sends 1DS telemetry on Linux (DNS look-ups of
    # mobile.events.data.microsoft.com from a long-running process); read at its first session
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
    os.environ.pop("TIKTOKEN_CACHE_DIR", None)
    os.environ.pop("NLTK_DATA", None)
