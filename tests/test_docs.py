"""The README and docs/ stay true to the tree: links resolve, the map names every part, every documented command composes."""
from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from conftest import CONFIGS, REPO, compose_config

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: the script -> its config (configs/<name>.yaml)
SCRIPT_CONFIG = {"prepare": "prepare", "import": "import", "export_nbest": "export", "train": "train", "release": "release",
                 "promote": "promote", "registry": "registry", "merge": "merge", "serve": "serve",
                 "benchmarks/run": "bench"}
#: the benchmarks' entry point (configs/bench.yaml; one option of configs/bench/ per benchmark)
BENCH = "benchmarks/run"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_link_resolves(doc):
    headings = {_anchor(h) for h in re.findall(r"^#+ (.+)$", doc.read_text(), flags=re.MULTILINE)}
    broken = []
    for link in _links(doc):
        if link.startswith(("http://", "https://")):
            continue
        target, _, anchor = link.partition("#")
        if (target and not (doc.parent / target).exists()) or (not target and anchor not in headings):
            broken.append(link)
    assert broken == [], f"{doc.name}: links to nothing: {broken}"


def test_the_definitions_are_the_projects_own():
    """docs/REFERENCE.md holds the definitions; nothing points outside the repository for them."""
    assert (REPO / "docs" / "REFERENCE.md").exists()
    for path in [*DOCS, *REPO.glob("rerank/**/*.py"), *REPO.glob("scripts/*.py"), *REPO.glob("benchmarks/*.py"),
                 *REPO.glob("configs/**/*.yaml")]:
        assert "shared/REFERENCE" not in path.read_text(), path
    text = (REPO / "docs" / "REFERENCE.md").read_text()
    for section in ("## 1. Hypotheses", "## 2. Semantic error (SemER) and interpretation error (IE)", "## 3. Scores and losses",
                    "## 4. Calibration figures", "## 5. Data to run on"):  # the code cites "REFERENCE.md s.N"
        assert section in text


def test_the_map_names_every_part_of_the_tree():
    """README "What is where": every top-level folder, rerank/ subpackage and module, script, benchmark and config group."""
    readme = REPO / "README.md"
    text = readme.read_text()
    where = text[text.index("## What is where"):text.index("### The layers")]
    names = sorted({f.split("/")[0] + "/" for f in _tracked() if "/" in f and not f.startswith(".")})
    names += [p.name + "/" for p in (REPO / "rerank").iterdir() if p.is_dir() and p.name != "__pycache__"]
    names += [p.name for p in (REPO / "rerank").glob("*.py") if p.name != "__init__.py"]
    names += [p.name for p in (REPO / "scripts").glob("*.py")]
    names += [p.name for p in (REPO / "benchmarks").iterdir() if p.is_file() and p.name != "__init__.py"]
    names += [p.name.removesuffix(".yaml") for p in CONFIGS.iterdir()]  # every config and every group
    missing = sorted(n for n in names if not re.search(rf"(?<![\w.]){re.escape(n)}", where))
    assert missing == [], f"README.md, What is where, does not name {missing}"


def _tracked() -> list[str]:
    """The repository's files (git's list; without git, the folders that are not generated)."""
    try:
        out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
        return out.stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        generated = {"outputs", "multirun", "lightning_logs", "__pycache__"}
        return [f"{p.name}/x" for p in REPO.iterdir()
                if p.is_dir() and p.name not in generated and not p.name.endswith("egg-info")]


def _documented_commands(docs=DOCS) -> list[tuple[str, str, list[str]]]:
    out = []
    for doc in docs:
        for m in re.finditer(r"python (?:scripts/(\w+)\.py|(benchmarks/run)\.py|-m rerank\.serving\.ray_serve)([^\n#`]*)",
                             doc.read_text().replace("\\\n", " ")):
            out.append((doc.relative_to(REPO).as_posix(), m.group(1) or m.group(2) or "serve", shlex.split(m.group(3).strip())))
    return out


def _bench_options() -> list[str]:
    return sorted(p.stem for p in (CONFIGS / "bench").glob("*.yaml"))


def _composes(doc: str, script: str, args: list[str]) -> list[str]:
    """The failures of composing one documented command against configs/ (none: it composes)."""
    overrides = [a for a in args if "=" in a and "<" not in a and "..." not in a
                 and not a.lstrip("+").startswith("hydra") and not a.startswith("replicas=")]
    # a sweep's first job
    overrides = [o.split(",")[0] if "," in o and not any(c in o for c in "[{") else o for o in overrides]
    overrides = ["domain=Music" if o == "domain=all" else o for o in overrides]
    if script == "train" and not any(o.startswith("domain=") for o in overrides):
        overrides.append("domain=Music")
    if "recognizers=acme" in overrides:  # docs/RECOGNIZERS.md's config of your own
        return []
    runs = [overrides]
    if script == BENCH and not any(o.startswith("bench=") for o in overrides):  # bench=<name>: every benchmark
        runs = [[f"bench={b}", *overrides] for b in _bench_options()]
    failed = []
    for run in runs:
        try:
            compose_config(SCRIPT_CONFIG[script], run)
        except Exception as e:  # noqa: BLE001 - every failure is reported with its command
            where = f"{script}.py" if "/" in script else f"scripts/{script}.py"
            failed.append(f"{doc}: {where} {' '.join(args)}: {type(e).__name__}: {str(e).splitlines()[0]}")
    return failed


def test_every_documented_command_composes():
    """Each ``python scripts/<x>.py k=v ...`` and ``python benchmarks/run.py bench=<x> ...`` of the docs names keys
    and options its config has."""
    commands = _documented_commands()
    assert len(commands) > 40
    benches = {a for _, s, args in commands if s == BENCH for a in args if a.startswith("bench=")}
    assert {"bench=suite", "bench=ablation"} <= benches
    failed = [f for command in commands for f in _composes(*command)]
    assert failed == [], "\n".join(failed)


def test_every_command_of_benchmarks_md_composes():
    """BENCHMARKS.md's commands, those that measured a figure and those that would measure it again, still compose."""
    # scripts/pipeline.py has no config of its own: it routes each override to the steps that have it
    commands = [c for c in _documented_commands([REPO / "BENCHMARKS.md"]) if c[1] != "pipeline"]
    assert sum(s == BENCH for _, s, _ in commands) > 15
    failed = [f for command in commands for f in _composes(*command)]
    assert failed == [], "\n".join(failed)
