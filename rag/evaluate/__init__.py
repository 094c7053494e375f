"""Evaluation: questions with known answers → metrics, per-question results, history.

    from pathlib import Path
    from rag import Rag
    from rag.evaluate import load_dataset, run_eval
    run = run_eval(Rag(), load_dataset(Path("evals/seeds_qa.jsonl")), k=5)
    print(run.metrics["hit@5"], run.path)

Stages: dataset.py (load and validate), metrics.py (pure metric functions), runner.py
(ask, score, baselines), history.py (saved runs and diffs), report.py (text, HTML, Markdown).
"""

from .dataset import EvalItem, dataset_dirs, find_datasets, load_dataset
from .history import diff_runs, list_runs, load_run, resolve_runs
from .metrics import check_gates, metric_names, parse_gates
from .report import write_report
from .runner import (
    BASELINES,
    RUNS_DIR,
    EvalRun,
    compare,
    evidence_in_index,
    failures,
    run_eval,
)

__all__ = [
    "BASELINES",
    "RUNS_DIR",
    "EvalItem",
    "EvalRun",
    "check_gates",
    "compare",
    "dataset_dirs",
    "diff_runs",
    "evidence_in_index",
    "failures",
    "find_datasets",
    "list_runs",
    "load_dataset",
    "load_run",
    "metric_names",
    "parse_gates",
    "resolve_runs",
    "run_eval",
    "write_report",
]
