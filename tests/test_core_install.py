"""The install by role (pyproject.toml): the core serves without torch, and every import is declared.

``pip install .`` is the core: the tables, the published models and the registry, the merge, the
releases and the ranking service. Here it is installed into a fresh venv (the real resolution, with
requirements.lock as constraints, as ``make install`` does), and that venv runs ``scripts/serve.py``
against a registry that the dev venv trained: it answers ``/rank`` as the offline ranker does, and
torch cannot be imported there. The install takes about 30 s with a warm pip cache.
"""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import time
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import httpx
import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from conftest import REPO
from rerank.model.registry import Registry
from test_serve import CORPUS, assert_same_ranking, offline, served, serving, utterances

LOCK = REPO / "requirements.lock"
#: what the core install must not hold: training, the built-in recognizers, TensorBoard
NOT_IN_CORE = ("torch", "lightning", "torchmetrics", "sklearn", "pycrfsuite", "tensorboard")


def _env() -> dict:
    """This environment less PYTHONPATH (the worktree must not win over what the core venv installed)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def core_python(tmp_path_factory) -> Path:
    """The python of a fresh venv holding ``pip install -c requirements.lock .`` and nothing else."""
    work = tmp_path_factory.mktemp("core_install")
    src = work / "src"  # a copy: pip builds in the source folder, and must not write into the repo
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for package in ("rerank", "hydra_plugins"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True, timeout=120, env=_env())
    python = work / "venv" / "bin" / "python"
    start = time.monotonic()
    out = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c", str(LOCK), str(src)],
                         check=False, capture_output=True, text=True, timeout=900, env=_env())
    assert out.returncode == 0, f"pip install of the core failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    print(f"core install: {time.monotonic() - start:.0f} s")
    return python


def _run(python: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python args...`` outside the repository, without PYTHONPATH."""
    return subprocess.run([str(python), *args], check=False, capture_output=True, text=True, env=_env(), cwd=python.parent,
                          timeout=timeout)


def test_the_core_install_holds_no_torch(core_python):
    out = _run(core_python, "-c", "import torch")
    assert out.returncode != 0 and "No module named 'torch'" in out.stderr, out.stderr
    code = ("import importlib.util, rerank; "
            f"print(rerank.__file__); print(sorted(m for m in {NOT_IN_CORE!r} if importlib.util.find_spec(m)))")
    out = _run(core_python, "-c", code)
    assert out.returncode == 0, out.stderr
    where, found = out.stdout.splitlines()
    assert "site-packages" in where, where  # the installed copy, not the worktree
    assert found == "[]", f"the core install pulled in {found}"
    check = _run(core_python, "-m", "pip", "check")
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_core_install_serves_a_registry_the_dev_install_trained(core_python, prepared, train_config, tmp_path,
                                                                     monkeypatch):
    from rerank.training.train import train  # training needs torch: it runs here, in the dev venv

    domain = prepared.manifest["domains"][0]
    result = train(train_config(domain, "crossentropy", "trainer.max_epochs=3", "~logger"))  # published as v1
    registry = tmp_path / "registry"
    Registry(registry).release(CORPUS, {domain: result["version"]}, {"action": "promote", "verdict": "test", "forced": True})
    # scripts/serve.py started by the core venv's python (running_service starts sys.executable), without PYTHONPATH
    monkeypatch.setattr(sys, "executable", str(core_python))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    with serving(prepared, registry) as (url, _, pid):
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode() == str(core_python)
        hyps = next(h for h in utterances(prepared) if any(x["domain"] == domain for x in h))
        r = httpx.post(url + "/rank", json={"utt_id": "u", "hypotheses": hyps})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["versions"][domain] == result["version"] and domain not in body["fallback"]
    assert_same_ranking(served(body), offline(registry, body["versions"], hyps))


# ------------------------------------------------------------------ every import is declared

#: import names whose distribution is not named the same (packages_distributions() cannot tell an
#: uninstalled one)
DISTRIBUTION = {"sklearn": "scikit-learn", "pycrfsuite": "python-crfsuite", "yaml": "pyyaml", "PIL": "pillow",
                "prometheus_client": "prometheus-client", "hydra": "hydra-core"}
#: imported only inside ``try: ... except ImportError`` (with a fallback), and where they come from
OPTIONAL = {"uvloop": "uvicorn[standard] on Linux and macOS; benchmarks/serve_load.py falls back to asyncio"}


def _third_party_imports(roots: tuple[str, ...]) -> dict[str, list[str]]:
    local = {"rerank", "hydra_plugins", "benchmarks", "conftest", "__future__"} | {p.stem for p in (REPO / "tests").glob("*.py")}
    found: dict[str, list[str]] = {}
    for root in roots:
        for path in sorted((REPO / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in local:
                        found.setdefault(top, []).append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def _declared() -> dict[str, set[str]]:
    """Every distribution pyproject.toml names, and the groups that name it ("core" or an extra)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    groups = {"core": project["dependencies"], **project["optional-dependencies"]}
    out: dict[str, set[str]] = {}
    for group, reqs in groups.items():
        for req in reqs:
            name = re.match(r"[A-Za-z0-9._-]+", req).group(0)
            out.setdefault(re.sub(r"[-_.]+", "-", name).lower(), set()).add(group)
    return out


@cache
def _installed() -> dict[str, list[str]]:
    return packages_distributions()


def _distribution(module: str) -> str:
    name = DISTRIBUTION.get(module) or (_installed().get(module) or [module])[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_import_is_declared():
    declared = _declared()
    imports = {**_third_party_imports(("rerank", "scripts", "hydra_plugins", "benchmarks")), **{
        m: w for m, w in _third_party_imports(("tests",)).items() if m != "pytest"}}
    missing = [f"{m} ({_distribution(m)}): {', '.join(w[:3])}" for m, w in sorted(imports.items())
               if m not in OPTIONAL and _distribution(m) not in declared]
    assert missing == [], "imported but not declared in pyproject.toml:\n" + "\n".join(missing)
    assert "pytest" in declared and "dev" in declared["pytest"]


def test_the_core_declares_no_training_or_recognizer_package():
    core = {d for d, groups in _declared().items() if "core" in groups}
    assert not core & {_distribution(m) for m in NOT_IN_CORE}
