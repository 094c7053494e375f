#!/usr/bin/env bash
# A team setup without containers: one `chroma run` for the vectors, two `rag serve`
# instances sharing it and one index folder (catalog + keyword index on a shared disk),
# optionally a llama-server for generated answers. Ctrl-C (or SIGTERM) stops them all.
#
#   deploy/team.sh                       # ports 8000 (chroma), 7860 and 7861 (rag)
#   RAG_API_KEY=secret HOST=0.0.0.0 deploy/team.sh
#   LLM_GGUF=~/.cache/rag/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf deploy/team.sh
#
# Settings (environment): DATA (./team-data), CHROMA_PORT, RAG_PORTS ("7860 7861"), HOST,
# RAG_API_KEY, LLM_GGUF, LLM_PORT (8080), RAG (the rag command), CHROMA (the chroma command).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
DATA="${DATA:-$PWD/team-data}"
CHROMA_PORT="${CHROMA_PORT:-8000}"
RAG_PORTS="${RAG_PORTS:-7860 7861}"
HOST="${HOST:-127.0.0.1}"
RAG="${RAG:-$here/.venv/bin/rag}"
CHROMA="${CHROMA:-$here/.venv/bin/chroma}"
LLM_PORT="${LLM_PORT:-8080}"
mkdir -p "$DATA/chroma" "$DATA/documents"
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait; }
trap stop EXIT INT TERM

wait_port() {  # wait_port PORT NAME
  for _ in $(seq 1 600); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "team: $2 did not open port $1" >&2; exit 1
}

ANONYMIZED_TELEMETRY=False "$CHROMA" run --path "$DATA/chroma" --host 127.0.0.1 \
  --port "$CHROMA_PORT" >"$DATA/chroma.log" 2>&1 &
pids+=($!)
wait_port "$CHROMA_PORT" "chroma run"
echo "team: chroma run on http://127.0.0.1:$CHROMA_PORT"

llm=()
if [ -n "${LLM_GGUF:-}" ]; then
  "$RAG" serve-llm "$LLM_GGUF" --port "$LLM_PORT" >"$DATA/llm.log" 2>&1 &
  pids+=($!)
  wait_port "$LLM_PORT" "llama-server"
  llm=(--llm-url "http://127.0.0.1:$LLM_PORT/v1")
  echo "team: llama-server on http://127.0.0.1:$LLM_PORT/v1"
fi

for port in $RAG_PORTS; do
  "$RAG" --index "$DATA/index" --chroma-url "http://127.0.0.1:$CHROMA_PORT" serve \
    --host "$HOST" --port "$port" --docs "$DATA/documents" "${llm[@]}" \
    >"$DATA/rag-$port.log" 2>&1 &
  pids+=($!)
  wait_port "$port" "rag serve"
  echo "team: rag on http://$HOST:$port/ (API: /v1)"
done
echo "team: ready"
wait -n
