"""Smoke test of the benchmark suite (``python benchmarks/run.py bench=suite``): a reduced run on the tiny synthetic corpus.

Checks the shape of the output (rows, columns, results.json keys, plots, the
BENCHMARKS.md section), not its numbers; and that the entry point hands the suite
and the ablation the whole config and the command line.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]


def compose_bench(bench: str, overrides) -> dict:
    """``configs/bench.yaml`` with ``bench=<bench>`` and ``overrides``, resolved (what benchmarks/run.py hands the suite)."""
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name="bench", overrides=[f"bench={bench}", *overrides]), resolve=True)

REDUCED = (
    "data.synthetic.n_utterances=400", "recognizers.folds=2",
    "benchmark.alphas=[0.5]", "benchmark.temperatures=[1.0]",
    "benchmark.bootstrap=20", "benchmark.lightgbm=false",
    "benchmark.speed.joblib_sweep=false", "benchmark.speed.rank_utterances=20",
    # the four candidates=utterance rows are skipped here (status "skipped"); the full run trains them
    'benchmark.trainer_overrides=["~callbacks","trainer.max_epochs=2"]', "benchmark.utterance_candidates=false",
    "benchmark.joint.max_iter=20", "benchmark.joint.grid=[[0.5,1.0]]",
    "benchmark.interaction_l2=[0.01]", "benchmark.trees_grid=[]",
)

ROW_PREFIXES = [
    "unweighted baseline", "default system (configs/train.yaml", "R1 semer, candidates=domain",
    "R1 semer, candidates=utterance, competitors=baseline",
    "R1 semer, candidates=utterance, competitors=live", "R2 crossentropy", "R3 combined, candidates=domain",
    "R3 combined, candidates=utterance, competitors=baseline", "R3 combined, candidates=utterance, competitors=live",
    "default system + per-intent evidence weights", "Platt-scaled baseline", "joint model", "LightGBM LambdaMART", "oracle",
]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from benchmarks.suite import run_benchmark

    out = tmp_path_factory.mktemp("bench")
    overrides = [f"paths.output_dir={out}", *REDUCED]
    results = run_benchmark(compose_bench("suite", overrides), cli_overrides=overrides)
    return results, Path(results["report_dir"])


def test_results_json_has_every_part(bench):
    results, d = bench
    on_disk = json.loads((d / "results.json").read_text())
    assert {"corpus", "domains", "utterances", "hypotheses", "rows", "selection", "async_update", "speed", "plots",
            "seconds"} <= set(on_disk)
    names = [r["name"] for r in on_disk["rows"]]
    for prefix in ROW_PREFIXES:
        assert any(n.startswith(prefix) for n in names), (prefix, names)
    for r in on_disk["rows"]:
        assert {"name", "kind", "status", "retrain_alone", "train_seconds"} <= set(r)
        if r["status"] == "ok":
            assert {"semer", "semer_ci", "irer", "irer_ci", "domain_error", "ece_top", "mce_top", "brier_top", "gap_closed"} <= set(r)
    lgbm = next(r for r in on_disk["rows"] if r["name"].startswith("LightGBM"))
    assert lgbm["status"] in ("disabled", "not installed") and lgbm["retrain_alone"] == "no"
    skipped = [r for r in on_disk["rows"] if "candidates=utterance" in r["name"] and not r["name"].startswith("default system")]
    assert len(skipped) == 4 and all(r["status"].startswith("skipped") for r in skipped)
    assert {"R1", "R3", "joint"} <= set(on_disk["selection"])
    a = on_disk["async_update"]
    assert {"domain", "other_domains_bit_identical", "overall", "per_domain", "update_seconds", "full_retrain_seconds"} <= set(a)
    assert isinstance(a["other_domains_bit_identical"], bool)
    # the update went through the promotion gate: live after it is the candidate exactly when accepted
    g = a["gate"]
    candidate = a["versions_after"][a["domain"]]
    assert g["live"] == (candidate if g["accepted"] else a["versions_before"][a["domain"]])
    assert Path(g["report"]).is_file()
    s = on_disk["speed"]
    assert {"prepare_seconds", "train_hypotheses_per_second", "sweep_sequential_seconds", "merge_hypotheses_per_second",
            "rank_latency", "peak_rss_mb"} <= set(s)


def test_report_has_the_tables_and_plots(bench):
    results, d = bench
    text = (d / "report.md").read_text()
    from benchmarks.report import QUALITY_COLUMNS

    header = next(line for line in text.splitlines() if line.startswith("| system |"))
    for col in QUALITY_COLUMNS:
        assert col in header
    for section in ("## Quality (test split)", "## Where a row loses", "## Model selection (dev)",
                    "## Asynchronous update of one domain", "## Speed"):
        assert section in text
    for p in results["plots"]:
        assert (d / p).stat().st_size > 0
    assert "reliability.png" in results["plots"] and "feature_weights.png" in results["plots"]


def test_benchmarks_md_section_is_replaced_not_duplicated(bench, tmp_path):
    from benchmarks.report import render_benchmarks_md, update_benchmarks_md

    results, _ = bench
    section = render_benchmarks_md(results)
    assert section.startswith(f"## Benchmark suite: {results['corpus']}")
    # the command that reruns it, through the one entry point
    assert results["command"].startswith("python benchmarks/run.py bench=suite paths.output_dir=")
    assert f"Generated by `{results['command']}`" in section
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nHand-written intro.\n\n## Benchmark suite: hwu64\n\nother corpus\n\n## Notes\n\nkeep me\n")
    update_benchmarks_md(path, results)
    update_benchmarks_md(path, results)
    text = path.read_text()
    assert text.count(f"## Benchmark suite: {results['corpus']}") == 1
    assert "Hand-written intro." in text and "other corpus" in text and "keep me" in text


def test_the_benchmark_runs_on_imported_tables_and_agrees(bench, tmp_path):
    """Bring your own NLU: the benchmark's per-domain rows on imported tables equal those on the prepared ones."""
    from benchmarks.suite import run_benchmark
    from rerank.hypotheses.export import export_nbest
    from rerank.hypotheses.nbest_import import import_nbest
    from rerank.hypotheses.tables import TableSet

    results, d = bench
    out = d.parents[1]  # <output_dir>/benchmarks/synthetic
    files = export_nbest(TableSet.open(out / "data" / "synthetic"), tmp_path / "export")
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        icfg = OmegaConf.to_container(compose(config_name="import", overrides=[
            "name=imported", f"nbest={files['nbest']}", f"gold={files['gold']}", f"paths.output_dir={tmp_path}"]), resolve=True)
        import_nbest(icfg)
    overrides = [f"paths.output_dir={tmp_path}", "data=tables", "data.name=imported",
                 *[o for o in REDUCED if not o.startswith(("data.", "recognizers."))],
                 "benchmark.platt_rows=false", "benchmark.mlp_rows=false", "benchmark.async_update.enabled=false"]
    imported = run_benchmark(compose_bench("suite", overrides), cli_overrides=overrides)
    rows = {r["name"]: r for r in imported["rows"]}
    prepared = {r["name"]: r for r in results["rows"]}
    for name in ("unweighted baseline (dc*ic*ner)", "R2 crossentropy", "oracle"):
        assert rows[name]["semer"] == prepared[name]["semer"], name
        assert rows[name]["per_domain"] == prepared[name]["per_domain"], name
    assert imported["corpus"] == "imported"


def test_the_evidence_ablation_measures_every_family_on_dev_and_the_chosen_one_on_test(tmp_path):
    from benchmarks.ablation import run_ablation

    out = tmp_path / "ablation"
    overrides = [f"paths.output_dir={out}", "data.synthetic.n_utterances=400", "recognizers.folds=2", "benchmark.bootstrap=20",
                 "benchmark.ablation.families=[ic,oov]", 'benchmark.trainer_overrides=["~callbacks","trainer.max_epochs=2"]',
                 "write_benchmarks_md=true", f"benchmarks_md={tmp_path / 'BENCHMARKS.md'}"]
    results = run_ablation(compose_bench("ablation", overrides), cli_overrides=overrides)
    assert results["command"].startswith("python benchmarks/run.py bench=ablation paths.output_dir=")
    names = [r["name"] for r in results["dev"]]
    assert names[:4] == ["no evidence (features=base)", "+ ic", "+ oov", "+ every family (text-derived and NLU-side)"]
    # ic is NLU-side (a field the client's NLU must send), oov text-derived: the NLU-side family joins the
    # chosen set only if it lowers dev SemER by more than benchmark.ablation.nlu_margin
    every = results["dev"][3]
    text = next(r for r in results["dev"] if r["name"].startswith("+ the text-derived families only"))
    assert text["evidence"] == ["oov"]
    assert results["chosen"] == (["ic", "oov"] if text["semer"] - every["semer"] > 0.005 else ["oov"])
    for r in results["dev"]:
        assert r["semer_ci"][0] <= r["semer"] <= r["semer_ci"][1] and r["ece_top_ci"] is not None and r["gap_closed"] is not None
    test_names = [r["name"] for r in results["test_rows"]]
    assert test_names[0].startswith("unweighted baseline") and test_names[1] == "default, features=base (no evidence)"
    # no evidence, the chosen set, and every family when it was not chosen
    assert test_names[-1] == "oracle" and len(test_names) == (4 if results["chosen"] == ["ic", "oov"] else 5)
    saved = json.loads((out / "benchmarks" / "synthetic" / "ablation.json").read_text())
    assert saved["chosen"] == results["chosen"]
    assert (out / "benchmarks" / "synthetic" / saved["plot"]).stat().st_size > 1000
    section = (tmp_path / "BENCHMARKS.md").read_text()
    assert "## Evidence ablation: synthetic" in section and "| + oov |" in section


# ------------------------------------------------------------------ the entry point, benchmarks/run.py

CALLS: list = []


def record_whole(cfg, cli_overrides=()):
    CALLS.append((cfg, list(cli_overrides)))
    return {"rows": []}  # as run_benchmark: results, not an exit code


def record_keys(**keys):
    CALLS.append(keys)
    return 3


def test_the_entry_point_hands_the_suite_the_whole_config_and_a_speed_bench_its_keys():
    from benchmarks.run import run

    for bench in ("suite", "ablation"):
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
            cfg = compose(config_name="bench", overrides=[f"bench={bench}", "data=hwu64", "benchmark.bootstrap=7"])
        assert cfg.bench._target_ == f"benchmarks.{'suite.run_benchmark' if bench == 'suite' else 'ablation.run_ablation'}"
        cfg.bench._target_ = f"{__name__}.record_whole"
        assert run(cfg, [f"bench={bench}", "data=hwu64", "benchmark.bootstrap=7"]) == 0
        whole, overrides = CALLS.pop()
        assert whole["data"]["name"] == "hwu64" and whole["benchmark"]["bootstrap"] == 7 and "recognizers" in whole
        assert overrides == [f"bench={bench}", "data=hwu64", "benchmark.bootstrap=7"]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="bench", overrides=["bench=merge", "bench.calls=7"])
    cfg.bench._target_ = f"{__name__}.record_keys"
    assert run(cfg, ["bench=merge", "bench.calls=7"]) == 3  # the speed bench's exit code
    keys = CALLS.pop()
    assert keys["calls"] == 7 and keys["data_path"] == "../shared/data/hwu64" and "_target_" not in keys


@pytest.mark.parametrize("bench", ["suite", "ablation", "merge"])
def test_the_entry_point_prints_its_config_from_anywhere(bench, tmp_path):
    """``python benchmarks/run.py bench=<x> --cfg job`` from another folder and without PYTHONPATH: configs/ is found."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), f"bench={bench}", "--cfg", "job"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "_target_: benchmarks." in out.stdout and "paths:" in out.stdout
    assert not (tmp_path / "outputs").exists()  # nothing ran
