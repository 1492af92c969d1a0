"""benchmarks/scale.py: its seeded corpora, its report (growth factors and the summary line), and
a smoke run (`--quick`: two tiny corpora, a tiny model) that must end with the summary line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from benchlib import load

REPO = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(r"scale: sizes=(?P<sizes>[\d,]+) worst_rss_growth=(?P<rss>\d+\.\d+)\(\w+\) "
                     r"worst_cpu_per_doc_growth=(?P<cpu>\d+\.\d+)\(\w+\) "
                     r"longest_silence_s=(?P<silence>\d+\.\d+)\(\w+\) failed=(?P<failed>\d+)")


def test_corpora_are_seeded_and_a_smaller_one_is_the_start_of_a_larger(tmp_path):
    bench = load("scale")
    shape = bench.write_corpus(tmp_path / "a.tsv", 500, seed=1)
    bench.write_corpus(tmp_path / "b.tsv", 200, seed=1)
    a = (tmp_path / "a.tsv").read_text(encoding="utf-8").splitlines()
    assert len(a) == 500 and a[:200] == (tmp_path / "b.tsv").read_text().splitlines()
    assert {line.split("\t")[0] for line in a} == {"pos", "neg"}
    assert 150 < shape["mean_characters"] < 400  # 1-6 reviews, ~270 characters
    bench.write_corpus(tmp_path / "c.tsv", 500, seed=2)
    assert (tmp_path / "c.tsv").read_text() != (tmp_path / "a.tsv").read_text()


def test_report_and_growth_factors():
    bench = load("scale")
    results = [bench.Measure(100, "ingest", 1.0, 0.5, 40.0, 40.0, 0.9),
               bench.Measure(100, "train", 10.0, 8.0, 700.0, 700.0, 9.0),
               bench.Measure(2000, "ingest", 4.0, 5.0, 44.0, 44.0, 3.5),
               bench.Measure(2000, "train", 90.0, 100.0, 770.0, 760.0, 24.0)]
    text = bench.report(results, [100, 2000], ["ingest", "train"],
                        {100: {"mean_characters": 270.0, "bytes": 10**5},
                         2000: {"mean_characters": 271.0, "bytes": 2 * 10**6}})
    assert bench.growth(results, [100, 2000], ["ingest", "train"]) == {
        "ingest": {"tree_rss": 1.1, "max_rss": 1.1, "cpu": 10.0, "documents": 20.0},
        "train": {"tree_rss": 1.1, "max_rss": 1.09, "cpu": 12.5, "documents": 20.0}}
    assert "growth, 2,000 / 100 documents (x20):" in text
    assert text.splitlines()[-1] == ("scale: sizes=100,2000 worst_rss_growth=1.10(ingest) "
                                     "worst_cpu_per_doc_growth=0.62(train) "
                                     "longest_silence_s=24.0(train) failed=0")


@pytest.mark.slow
def test_quick_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "scale.py"), "--quick",
                             "--json", str(out)], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    match = SUMMARY.fullmatch(result.stdout.strip().splitlines()[-1])
    assert match, result.stdout[-2000:]
    assert match["sizes"] == "300,1200" and match["failed"] == "0"
    saved = json.loads(out.read_text())
    assert {(m["size"], m["step"]) for m in saved["results"]} == {
        (size, step) for size in (300, 1200) for step in ("ingest", "vocab", "train", "score")}
    for measure in saved["results"]:
        assert measure["exit_code"] == 0 and measure["cpu_s"] > 0
        assert measure["tree_rss_mb"] >= measure["max_rss_mb"] > 10
    assert set(saved["growth"]) == {"ingest", "vocab", "train", "score"}
