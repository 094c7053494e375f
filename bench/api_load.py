"""A bounded load test of the API: N clients asking seeds questions for T seconds.

Starts `rag serve --no-ui` on a free 127.0.0.1 port over an index of seeds/ (or uses
--url), then each client sends /v1/chat/completions (extractive) in a loop, and one more
client uploads a document through /v1/documents halfway, so answers run while an ingest
does. Prints a table: requests, throughput, p50/p95 latency, errors (503s counted apart).

    python bench/api_load.py --clients 16 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "How much did Japan pledge to the United States?",
    "What did Trump say the United States would receive from Korea?",
    "Who won the 2022 FIFA World Cup?",
    "What is the Mutual Defense Treaty?",
]


def _post(url: str, body: dict) -> tuple[int, float]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read()
            return r.status, time.perf_counter() - start
    except urllib.error.HTTPError as e:
        return e.code, time.perf_counter() - start
    except OSError:
        return -1, time.perf_counter() - start


def _upload(base: str, folder: Path) -> int:
    note = folder / "load-note.md"
    note.write_text("# Load\n\nThe load test note says the harbour crane lifts 40 tonnes.\n")
    p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-F",
                        f"files=@{note}", f"{base}/v1/documents"],
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    return int(p.stdout or -1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--url", help="an already running rag serve (default: start one)")
    args = ap.parse_args()
    proc = None
    tmp = Path(tempfile.mkdtemp(prefix="rag-load-"))
    base = args.url
    if not base:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
        log = (tmp / "serve.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "rag", "--index", str(tmp / "index"), "serve", "--no-ui",
             "--port", str(port), "--docs", str(tmp / "docs"), "--ingest", str(ROOT / "seeds")],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 300
        while "rag is serving" not in (tmp / "serve.log").read_text():
            if proc.poll() is not None or time.time() > deadline:
                sys.exit((tmp / "serve.log").read_text())
            time.sleep(0.2)
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    stop = time.time() + args.seconds

    def client(n: int) -> None:
        i = n
        while time.time() < stop:
            q = QUESTIONS[i % len(QUESTIONS)]
            i += 1
            body = {"model": "rag:extractive", "messages": [{"role": "user", "content": q}]}
            out = _post(f"{base}/v1/chat/completions", body)
            with lock:
                results.append(out)
            if out[0] == 503:
                time.sleep(2)  # as Retry-After says

    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
    started = time.time()
    for t in threads:
        t.start()
    time.sleep(args.seconds / 2)
    upload = _upload(base, tmp)
    for t in threads:
        t.join()
    elapsed = time.time() - started
    if proc is not None:
        proc.terminate()
        proc.wait(30)
    ok = [d for s, d in results if s == 200]
    busy = sum(1 for s, _ in results if s == 503)
    errors = sum(1 for s, _ in results if s not in (200, 503))
    q = statistics.quantiles(ok, n=20) if len(ok) >= 20 else [float("nan")] * 19
    print(f"| clients | seconds | requests | answered/s | p50 s | p95 s | 503 busy | errors "
          f"| upload during load |\n|---|---|---|---|---|---|---|---|---|\n"
          f"| {args.clients} | {elapsed:.0f} | {len(results)} | {len(ok) / elapsed:.2f} | "
          f"{statistics.median(ok) if ok else float('nan'):.2f} | {q[18]:.2f} | {busy} | "
          f"{errors} | HTTP {upload} |")  # fmt: skip


if __name__ == "__main__":
    main()
