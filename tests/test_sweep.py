"""Hydra multiruns of ``scripts/train.py`` (joblib launcher), run as a user would, in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import REPO
from rerank.model.registry import Registry


def run_train(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "scripts/train.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    return proc


def job_domains(sweep_dir: Path) -> dict[str, str]:
    """``{job number: domain}`` from each job's ``.hydra/overrides.yaml``."""
    out = {}
    for job in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()):
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        [domain] = [o.split("=", 1)[1] for o in overrides if o.startswith("domain=")]
        out[job.name] = domain
    return out


def test_two_domain_multirun_publishes_both(prepared, tmp_path):
    a, b = prepared.manifest["domains"][:2]
    registry, sweep = tmp_path / "registry", tmp_path / "sweep"
    proc = run_train("-m", f"domain={a},{b}", "loss=crossentropy", f"paths.output_dir={prepared.output_dir}",
                     "trainer.max_epochs=2", "hydra.launcher.n_jobs=2",
                     f"paths.registry_dir={registry}", f"paths.log_dir={tmp_path / 'logs'}", f"hydra.sweep.dir={sweep}")
    reg = Registry(registry)
    assert reg.versions("synthetic", a) == ["v1"]
    assert reg.versions("synthetic", b) == ["v1"]
    assert reg.domains("synthetic") == sorted([a, b])
    assert sorted(job_domains(sweep).values()) == sorted([a, b])
    for d in (a, b):
        assert f"train synthetic/{d} loss=crossentropy" in proc.stdout and f"{d} loss=crossentropy: dev SemER" in proc.stdout
    # the tables were read, never built by the parallel jobs
    assert "prepare: wrote" not in proc.stdout
    # a sweep publishes, then plans one release over both domains when it ends (no per-job gate)
    assert "promote synthetic/" not in proc.stdout and proc.stdout.count("release synthetic:") == 1
    records = reg.releases("synthetic").records()
    assert len(records) <= 1
    released = {m["domain"]: m["to"] for r in records for m in r["moves"]}
    assert set(released) <= {a, b} and all(v == "v1" for v in released.values())
    for d in (a, b):
        assert reg.live("synthetic", d) == released.get(d)
        if d not in released:  # refused: its history says so, with the plan's report
            assert reg.history("synthetic", d)[-1]["verdict"].startswith("refused")


def test_domain_all_expands_to_every_domain(prepared, tmp_path):
    domains = prepared.manifest["domains"]
    registry, sweep = tmp_path / "registry", tmp_path / "sweep"
    proc = run_train("domain=all", "loss=crossentropy", "trainer=fast_dev_run", f"paths.output_dir={prepared.output_dir}",
                     # one worker: the parallel launch is the test above; this one is about the expansion
                     "hydra.launcher.n_jobs=1", "threads=1", f"paths.registry_dir={registry}",
                     f"paths.log_dir={tmp_path / 'logs'}", f"hydra.sweep.dir={sweep}")
    jobs = job_domains(sweep)
    assert sorted(jobs.values()) == sorted(domains), jobs
    assert len(jobs) == len(domains)
    for d in domains:
        assert f"train synthetic/{d} loss=crossentropy" in proc.stdout, d
    # fast_dev_run publishes nothing
    assert Registry(registry).domains("synthetic") == []
    assert "prepare: wrote" not in proc.stdout


def test_domain_all_refuses_a_corpus_sweep(prepared, tmp_path):
    proc = subprocess.run([sys.executable, "scripts/train.py", "domain=all", "data=synthetic,hwu64",
                           f"paths.output_dir={prepared.output_dir}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "one corpus at a time" in proc.stdout + proc.stderr


def test_domain_all_without_tables_names_the_command(tmp_path):
    proc = subprocess.run([sys.executable, "scripts/train.py", "domain=all", f"paths.output_dir={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "scripts/prepare.py data=synthetic" in proc.stdout + proc.stderr
    assert not (tmp_path / "data").exists()


def test_domain_all_on_imported_tables(prepared, tmp_path):
    """data=tables: a sweep over every domain of tables that import wrote (here: the prepared ones, exported)."""
    from conftest import compose_config
    from rerank.hypotheses.export import export_nbest
    from rerank.hypotheses.nbest_import import import_nbest
    from rerank.hypotheses.tables import TableSet

    files = export_nbest(TableSet.open(prepared.data_dir), tmp_path / "export")
    import_nbest(compose_config("import", ["name=acme", f"nbest={files['nbest']}", f"gold={files['gold']}",
                                           f"paths.output_dir={tmp_path}"]))
    registry, sweep = tmp_path / "registry", tmp_path / "sweep"
    proc = run_train("domain=all", "data=tables", "data.name=acme", "loss=crossentropy", "trainer.max_epochs=2",
                     f"paths.output_dir={tmp_path}", "hydra.launcher.n_jobs=1", "threads=1", "promote=none",
                     f"paths.registry_dir={registry}", f"paths.log_dir={tmp_path / 'logs'}", f"hydra.sweep.dir={sweep}")
    assert sorted(job_domains(sweep).values()) == sorted(prepared.manifest["domains"])
    reg = Registry(registry)
    assert reg.domains("acme") == sorted(prepared.manifest["domains"])
    assert all(reg.live("acme", d) is None for d in reg.domains("acme"))  # promote=none: candidates only
    assert "train acme/" in proc.stdout
