"""The benchmark's smoke run: small sizes, checks only that it runs and reports every figure.
Figures are never asserted here; the full run (python bench/run.py) is for people."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ("ingest_ratio", "scrape_ratio", "scrape_ratio_prometheus_client",
           "memory_bytes_per_session", "ingest_ratio_to_floor", "fanout_ratio_to_floor",
           "scrape_p99_during_round_seconds", "filter_ratio")


@pytest.mark.slow
def test_quick_benchmark_reports_every_figure(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    run = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--output",
                          str(output)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads(output.read_text())
    assert results["mode"] == "quick"
    for figure in FIGURES:
        assert isinstance(results[figure], float) and results[figure] > 0, figure
        assert figure in run.stdout
    assert results["filter_matched"] > 0
    # Quick sizes mean nothing against the requirements: no verdict, and it says so.
    assert "no verdicts" in run.stdout
    assert "MISSED" not in run.stdout and "required" not in run.stdout
