"""The Evaluation tab: run a question set, compare retrieval modes and baselines, see the
failures and what changed since the previous run of the same questions; download a report."""

from __future__ import annotations

import html
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from .. import evaluate as ev
from ..config import AnswerSettings
from ..errors import UsageError
from ..evaluate.report import fmt, meaning
from .engine import Engine
from .handlers import guard, progress_bar

UPLOADED = "Uploaded file"
# made by bench/calibrate.py into the repo's docs/: found beside the package, not the cwd
CALIBRATION_PNG = Path(__file__).resolve().parents[2] / "docs" / "calibration.png"


def refresh_datasets(engine: Engine, current: str | None) -> Any:
    """The dataset list as it is now on disk (e.g. after `rag feedback export`)."""
    shipped = [str(p) for p in ev.find_datasets(engine.settings.store.index_dir)]
    choices = [*shipped, UPLOADED]
    return gr.update(choices=choices, value=current if current in choices else choices[0])


def runs_dir(index_dir: Path | str) -> Path:
    """Where the app keeps its eval runs: ./evals/runs in a project with an evals/ folder
    (shared with `rag eval`), else inside the index folder, never loose in the cwd."""
    here = Path("evals")
    return here / "runs" if here.is_dir() else Path(index_dir) / "evals" / "runs"


def evaluation_tab(engine: Engine, mode_default: str, k_default: int) -> Any:
    """Lay out the tab inside the current Blocks and wire its events; returns the dataset
    choice, whose list `refresh_datasets` renews (feedback exported since the app started)."""
    # found wherever the app starts: the index's evals/, ./evals, the checkout's evals/
    shipped = [str(p) for p in ev.find_datasets(engine.settings.store.index_dir)]
    gr.Markdown(
        "Run a question set with known answers through the pipeline. Datasets are JSONL: "
        '`{"id", "question", "answer", "keys", "evidence", "answerable"}` per line '
        "(see `rag eval --help`)."
    )
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=280):
            dataset = gr.Radio(
                [*shipped, UPLOADED],
                value=shipped[0] if shipped else UPLOADED,
                label="Dataset",
                elem_id="eval-dataset",
            )
            upload = gr.File(
                file_types=[".jsonl", ".csv"],
                label="Or upload a dataset (JSONL or CSV)",
                elem_id="eval-upload",
                height=150,
            )
        with gr.Column(scale=2, min_width=280):
            mode = gr.Radio(["hybrid", "dense", "keyword"], value=mode_default, label="Mode")
            k = gr.Slider(1, 20, value=k_default, step=1, label="Passages per question (k)")
            baselines = gr.CheckboxGroup(
                list(ev.BASELINES),
                value=["dense", "keyword", "hybrid"],
                label="Compare with",
                elem_id="eval-baselines",
                info="llamaindex builds its own index: slower",
            )
            run = gr.Button("Run evaluation", variant="primary", elem_id="eval-run")
    summary = gr.Markdown(elem_id="eval-summary")
    with gr.Row(equal_height=False):
        metrics = gr.Dataframe(
            value=pd.DataFrame(columns=["metric", "this run", "meaning"]),  # not "1 2 3"
            label="Metrics",
            interactive=False,
            elem_id="eval-metrics",
            wrap=True,
            scale=3,
        )
        chart = gr.BarPlot(
            x="bar",
            y="value",
            color="system",
            color_title="system",  # the legend: which colour is which system
            label="Retrieval modes and baselines",
            x_title="metric · system",
            y_lim=[0, 1],
            x_label_angle=-45,
            elem_id="eval-chart",
            scale=2,
            height=380,
        )
    failed = gr.Dataframe(
        headers=["id", "question", "expected", "got", "why"],
        column_widths=["7%", "23%", "22%", "28%", "20%"],
        label="Failures",
        interactive=False,
        wrap=True,
        elem_id="eval-failures",
    )
    diff = gr.Markdown(elem_id="eval-diff")
    report = gr.DownloadButton("Download the report (HTML)", visible=False, elem_id="eval-report")
    calibration_panel(engine.settings.answer)

    upload.upload(lambda: UPLOADED, None, dataset, api_name=False)

    @guard(outputs=6)
    def evaluate(
        choice: str,
        uploaded: str | None,
        mode_: str,
        k_: float,
        names: list[str],
        progress: Any = gr.Progress(),  # noqa: B008
    ) -> tuple[Any, ...]:
        if choice == UPLOADED:
            if not uploaded:
                raise gr.Error("Upload a dataset first, or choose a shipped one.")
            path = Path(uploaded)
        else:
            path = Path(choice)
        items = ev.load_dataset(path)
        k_ = int(k_)

        def work(rag: Any, tick: Any) -> tuple[Any, Any]:
            found, tried = ev.evidence_in_index(rag, items)
            if tried and not found:
                raise UsageError(
                    f"none of {tried} evidence quotes of {path.name} is in this index: the set "
                    "was written for other documents (pydocs_qa.jsonl needs an index of "
                    "evals/corpora/pydocs); start `rag serve` with that index"
                )
            done = ev.run_eval(
                rag,
                items,
                k=k_,
                mode=mode_,
                dataset_path=path,
                runs_dir=runs_dir(engine.settings.store.index_dir),
                progress=lambda d, t: tick("questions", d, t),
            )
            comparison = None
            if names:
                comparison = ev.compare(
                    rag,
                    items,
                    names,
                    k=k_,
                    mode=mode_,
                    main=done,
                    progress=lambda d, t: tick("baselines", d, t),
                )
            return done, comparison

        result, comparison = engine.run_with_progress("eval", work, progress_bar(progress))
        table = _metrics_table(result, comparison)
        out = Path(tempfile.mkdtemp(prefix="rag-report-")) / f"{result.id}.html"
        ev.write_report(result, out, compare=comparison)
        return (
            _summary(result, path),
            gr.update(value=table, column_widths=_widths(table)),
            _chart(result, comparison),
            _failures(result),
            _diff(result),
            gr.update(value=str(out), visible=True),
        )

    run.click(
        evaluate,
        [dataset, upload, mode, k, baselines],
        [summary, metrics, chart, failed, diff, report],
        concurrency_id="eval",
        concurrency_limit=1,
        api_name="evaluate",
    )
    return dataset


def calibration_panel(running: AnswerSettings, image: Path | None = None) -> None:
    """An accordion with the calibration plot and the fitted thresholds; a one-line note
    saying how to make the plot when its file is missing."""
    image = CALIBRATION_PNG if image is None else image
    fitted = AnswerSettings()  # the defaults are the fitted values
    text = (
        "`bench/calibrate.py` answers every question of the four shipped sets with no "
        "threshold, sweeps it, fits it on the tune sets (seeds_qa + pydocs tune) and reports "
        "it on the held-out ones. The defaults come from that fit: answers refuse below evidence "
        f"**{fitted.min_evidence:g}** (`min_evidence`); the optional cross-encoder judge "
        f"(`RAG_JUDGE=1`) refuses below logit **{fitted.min_judge:g}** (`min_judge`)."
    )
    if (running.min_evidence, running.min_judge) != (fitted.min_evidence, fitted.min_judge):
        text += (
            f" This app runs with min_evidence {running.min_evidence:g}, "
            f"min_judge {running.min_judge:g}."
        )
    with gr.Accordion(
        "Calibration: how the refusal threshold was chosen", open=False, elem_id="eval-calibration"
    ):
        gr.Markdown(text)
        if image.is_file():
            gr.Image(
                str(image),
                label="Refusal rate and false-refusal rate against the threshold, per set",
                interactive=False,
                elem_id="eval-calibration-plot",
            )
        else:
            gr.Markdown(
                f"No plot at `{image}`: make it with "
                f"`python bench/calibrate.py --plot docs/calibration.png`.",
                elem_id="eval-calibration-missing",
            )


def _summary(run: Any, path: Path) -> str:
    c = run.counts
    return (
        f"**{run.id}** — {path.name}: {c['questions']} questions ({c['answerable']} answerable, "
        f"{c['unanswerable']} unanswerable), {run.mode}, k={run.k}, {run.seconds:.1f} s. "
        f"**{c['failed']} failed.** Saved as `{run.path}`."
    )


def _metrics_table(run: Any, comparison: dict[str, Any] | None) -> pd.DataFrame:
    others = [n for n in (comparison or {}) if n != run.mode]
    rows = []
    for name, value in run.metrics.items():
        row = {"metric": name, f"this run ({run.mode})": fmt(name, value)}
        for other in others:
            row[other] = fmt(name, comparison[other].get(name))  # type: ignore[index]
        row["meaning"] = meaning(name)
        rows.append(row)
    return pd.DataFrame(rows)


def _widths(table: pd.DataFrame) -> list[str]:
    """Metric names and values narrow, the meaning wide."""
    values = len(table.columns) - 2
    return ["24%", *[f"{36 // max(values, 1)}%"] * values, "40%"]


def _chart(run: Any, comparison: dict[str, Any] | None) -> pd.DataFrame:
    """Bars of the rate metrics (0–1), grouped by metric: this run and each baseline side by side.

    With baselines, only the metrics at least two systems have (the retrieval ones: the
    other modes are measured on retrieval only).
    """
    systems = {run.mode: run.metrics}
    systems.update({n: m for n, m in (comparison or {}).items() if n != run.mode})
    need = 2 if len(systems) > 1 else 1
    shown = []
    for m in run.metrics:
        values = [v[m] for v in systems.values() if v.get(m) is not None]
        # rates only: latencies and sizes have scales of their own
        if len(values) >= need and not m.startswith("latency") and all(0 <= x <= 1 for x in values):
            shown.append(m)
    rows = [
        {"bar": f"{metric} · {name}", "metric": metric, "system": name, "value": float(v[metric])}
        for metric in shown
        for name, v in systems.items()
        if v.get(metric) is not None
    ]
    return pd.DataFrame(rows, columns=["bar", "metric", "system", "value"])


def _failures(run: Any) -> list[list[str]]:
    return [
        [
            q["id"],
            q["question"],
            q.get("expected") or ("(a refusal)" if not q["answerable"] else "–"),
            q.get("answer", "–"),
            "; ".join(q.get("reasons", [])) or "–",
        ]
        for q in ev.failures(run)
    ]


def _diff(run: Any) -> str:
    """What changed since the previous saved run of the same questions."""
    runs = [p for p in ev.list_runs(Path(run.path).parent) if p != Path(run.path)]
    earlier = None
    for p in reversed(runs):
        try:
            old = ev.load_run(p)
        except Exception:
            continue  # an unreadable old run is not this run's problem
        if old.dataset.get("sha256") == run.dataset.get("sha256") and old.status == "complete":
            earlier = p
            break
    if earlier is None:
        return "No earlier run of these questions to compare with: run it again after a change."
    d = ev.diff_runs(earlier, Path(run.path))
    rows = [
        f"| {m} | {fmt(m, v['a'])} | {fmt(m, v['b'])} | {_delta(m, v['delta'])} | "
        f"{v['change'] or ''} |"
        for m, v in d["metrics"].items()
        if v["change"] not in (None, "same")
    ]
    out = [f"#### Since {d['a']['id']} ({d['a']['mode']}, k={d['a']['k']})"]
    if rows:
        out += ["| metric | before | now | change | |", "|---|---:|---:|---:|---|", *rows]
    else:
        out.append("No metric changed.")
    for label, entries in (("Better", d["better"]), ("Worse", d["worse"])):
        if entries:
            out.append(
                f"\n**{label}:** "
                + "; ".join(
                    f"{html.escape(e['id'])} ({'; '.join(e['changes']) or 'ranks moved'})"
                    for e in entries
                )
            )
    return "\n".join(out)


def _delta(metric: str, delta: float | None) -> str:
    if delta is None:
        return ""
    return f"{delta:+.0f}" if metric.startswith("latency") else f"{delta:+.3f}"
