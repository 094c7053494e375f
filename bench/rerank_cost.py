"""What one reranked search costs, and whether a float cross-encoder batched would cost less.
Not a test: figures.

    .venv/bin/python bench/rerank_cost.py             # 40 windows of seeds text, 3 rounds
    .venv/bin/python bench/rerank_cost.py --pairs 60 --rounds 5

The bundled cross-encoder is int8 ONNX with *dynamic* quantisation: each MatMul quantises
its input activations with one scale for the whole batch, so a window's score moves with
the windows batched beside it, and `rerank.CrossEncoder` scores one pair a run. Issue 12
proposed a float model rebuilt from the int8 weights (dequantised initialisers), exact in
any batch. This script builds that model (it needs the `onnx` package: `pip install onnx`;
without it the float rows are left out), then times, side by side in one process:

  - int8, one pair a run (what `rag` does) and int8 in batches of 8;
  - float, one pair a run and in batches of 8 and of all pairs;
  - one query embedding (MiniLM, what issue 12's 15x target is measured against);

and prints the largest score difference between batch sizes and against int8.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.config import EmbedSettings  # noqa: E402
from rag.embeddings import make_embedder  # noqa: E402
from rag.rerank import CrossEncoder, bundled_model_files  # noqa: E402

QUESTION = "What did the United States agree to lower its tariffs on Korean cars to?"


def dequantize(src: Path, dst: Path) -> None:
    """The int8 model with every DynamicQuantizeLinear → MatMulInteger → Cast → Mul chain
    replaced by one float MatMul on weights (W_q − W_zp) × W_scale."""
    import onnx
    from onnx import helper
    from onnx import numpy_helper as nh

    model = onnx.load(str(src))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    prod = {o: n for n in g.node for o in n.output}
    cons: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            cons.setdefault(i, []).append(n)
    replace, weights = {}, []
    for n in g.node:
        if n.op_type != "MatMulInteger":
            continue
        xq, wq, _, wzp = n.input
        x = prod[xq].input[0]  # the DynamicQuantizeLinear's float input
        (cast,) = cons[n.output[0]]
        (mul,) = cons[cast.output[0]]
        scales = prod[next(i for i in mul.input if i != cast.output[0])]
        wscale = next(i for i in scales.input if i in inits)
        w = nh.to_array(inits[wq]).astype(np.float32) - nh.to_array(inits[wzp]).astype(np.float32)
        w *= nh.to_array(inits[wscale]).astype(np.float32)
        name = wq + "_float"
        weights.append(nh.from_array(w, name))
        replace[id(mul)] = helper.make_node("MatMul", [x, name], [mul.output[0]])
    nodes = [replace.get(id(n), n) for n in g.node]
    outputs = {o.name for o in g.output}
    while True:  # drop what nothing reads any more
        used = {i for n in nodes for i in n.input} | outputs
        kept = [n for n in nodes if any(o in used for o in n.output)]
        if len(kept) == len(nodes):
            break
        nodes = kept
    g.ClearField("node")
    g.node.extend(nodes)
    g.initializer.extend(weights)
    used = {i for n in nodes for i in n.input}
    live = [i for i in g.initializer if i.name in used]
    g.ClearField("initializer")
    g.initializer.extend(live)
    onnx.save(model, str(dst))


def passages(n: int) -> list[str]:
    words = " ".join(p.read_text() for p in sorted((ROOT / "seeds").glob("*.txt"))).split()
    return [" ".join(words[i * 70 : (i + 1) * 70]) for i in range(n)]


def best_of(rounds: int, fn) -> tuple[float, np.ndarray]:  # type: ignore[no-untyped-def]
    fn()  # warm
    best, out = float("inf"), None
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, np.asarray(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    model, tok = bundled_model_files()
    texts = passages(args.pairs)
    rows: list[tuple[str, float, np.ndarray]] = []
    emb = make_embedder(EmbedSettings())
    t_query, _ = best_of(args.rounds * 5, lambda: emb.embed([QUESTION]))
    with tempfile.TemporaryDirectory() as tmp:
        variants = [("int8, 1 pair a run", model, 1), ("int8, batches of 8", model, 8)]
        try:
            f32 = Path(tmp) / "rerank-float.onnx"
            dequantize(model, f32)
            variants += [
                ("float, 1 pair a run", f32, 1),
                ("float, batches of 8", f32, 8),
                (f"float, one batch of {args.pairs}", f32, args.pairs),
            ]
        except ImportError:
            print("(no `onnx` package: float rows left out; pip install onnx)")
        for label, path, batch in variants:
            ce = CrossEncoder(path, tok, batch_size=batch)
            t, scores = best_of(args.rounds, lambda ce=ce: ce.logits(QUESTION, texts))
            rows.append((label, t, scores))
    base = rows[0][1]
    print(f"{args.pairs} windows of ~70 words + the question; best of {args.rounds} runs\n")
    print(f"{'variant':<26} {'total ms':>9} {'ms/pair':>8} {'vs int8 b1':>10} {'x query':>8}")
    for label, t, _ in rows:
        print(
            f"{label:<26} {t * 1000:9.0f} {t * 1000 / args.pairs:8.1f} {t / base:10.2f} "
            f"{t / t_query:8.0f}"
        )
    print(f"{'one query embedding':<26} {t_query * 1000:9.1f}")
    by = {label: s for label, _, s in rows}
    print("\nlargest score difference (logits):")
    print(f"  int8: batches of 8 vs 1 pair a run  {np.abs(by[rows[1][0]] - rows[0][2]).max():.4f}")
    if len(rows) > 2:
        f1 = by["float, 1 pair a run"]
        print(f"  float: one batch vs 1 pair a run   {np.abs(rows[-1][2] - f1).max():.4f}")
        print(f"  float vs int8 (1 pair a run)       {np.abs(f1 - rows[0][2]).max():.4f}")


if __name__ == "__main__":
    main()
