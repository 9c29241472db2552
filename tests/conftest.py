"""Shared fixtures: one tiny prepared synthetic corpus per session, and Hydra-composed configs.

``prepared`` builds the hypothesis tables of a 400-utterance synthetic corpus
(2 cross-fitting folds) once; every test that trains points
``paths.output_dir`` at the same directory so that ``prepare`` is reused.
Tests that write (registry, logs) get their own ``paths.registry_dir`` and
``paths.log_dir`` so that they never see one another's versions.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

#: the tiny corpus every test uses (prepare takes ~3 s on 2 cores)
TINY = ("data.synthetic.n_utterances=400", "recognizers.folds=2")


def compose_config(name: str, overrides=()) -> dict:
    """``configs/<name>.yaml`` composed with ``overrides``, resolved to plain containers."""
    from rerank.config import compose_config as compose_

    return compose_(name, overrides, CONFIGS)


def prepare_config(output_dir: Path | str, *overrides: str, tiny: bool = True) -> dict:
    return compose_config("prepare", [f"paths.output_dir={output_dir}", *(TINY if tiny else ()), *overrides])


@dataclass
class Prepared:
    cfg: dict  # the resolved prepare config
    manifest: dict
    output_dir: Path  # paths.output_dir
    data_dir: Path  # <output_dir>/data/<corpus>

    def copy_to(self, dest: Path) -> "Prepared":
        """A copy of the prepared tables under another ``paths.output_dir`` (for tests that edit them)."""
        dest = Path(dest)
        new_data = dest / "data" / self.data_dir.name
        shutil.copytree(self.data_dir, new_data)
        cfg = dict(self.cfg, paths={**self.cfg["paths"], "output_dir": str(dest)})
        return Prepared(cfg, self.manifest, dest, new_data)


def edit_table(data_dir: Path, rel: str, column: str, make, reseal: bool = True) -> None:
    """Change one column of a table of a set; ``reseal``: update the manifest's checksum as a writer would.

    Without resealing, readers must refuse the changed file; resealed, the set
    stands for a table set that some other writer got wrong.
    """
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from rerank.io import sha256_bytes

    path = Path(data_dir) / rel
    t = pq.read_table(path)
    i = t.schema.get_field_index(column)
    t = t.set_column(i, t.schema.field(i), pa.array(make(t[column].to_numpy().copy()), t.schema.field(i).type))
    pq.write_table(t, path)
    if reseal:
        manifest = json.loads((Path(data_dir) / "manifest.json").read_text())
        data = path.read_bytes()
        manifest["files"][rel] = {"rows": t.num_rows, "bytes": len(data), "sha256": sha256_bytes(data)}
        (Path(data_dir) / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Prepared:
    from rerank.hypotheses.prepare import prepare
    from rerank.hypotheses.tables import set_dir

    out = tmp_path_factory.mktemp("prepared")
    cfg = prepare_config(out)
    manifest = prepare(cfg)
    return Prepared(cfg, manifest, out, set_dir(cfg))


@pytest.fixture
def train_config(prepared, tmp_path) -> Callable[..., dict]:
    """``train_config(domain, loss="crossentropy", *overrides, output_dir=None)``: a composed train config.

    ``paths.output_dir`` is the session's prepared corpus (prepare is reused)
    unless ``output_dir`` is given; registry and logs go to this test's tmp dir
    (``tmp_path/registry``, ``tmp_path/logs``) unless overridden; ``threads=1``.
    """

    def make(domain: str, loss: str = "crossentropy", *overrides: str, output_dir: Path | str | None = None) -> dict:
        out = output_dir if output_dir is not None else prepared.output_dir
        base = [
            f"paths.output_dir={out}", f"domain={domain}", f"loss={loss}",
            f"paths.registry_dir={tmp_path / 'registry'}", f"paths.log_dir={tmp_path / 'logs'}",
            # one torch thread: the problems are tiny, and on a busy 2-core machine two
            # spinning OpenMP threads make a run several times slower
            "threads=1",
        ]
        return compose_config("train", [*base, *overrides])

    return make


@dataclass
class LiveWorld:
    """A 1,500-utterance synthetic corpus with an R2 model of every domain published (v1, not live).

    As teams choose differently: ``evidence_domain``'s model reads every evidence family (the default
    features), the others' ``features=base``, which the gate's tests were written for (with 225 dev
    utterances, whether a version's gain clears the gate's interval depends on its features).
    """

    cfg: dict
    manifest: dict
    output_dir: Path
    registry_dir: Path  # the base registry; tests copy it before they change it
    evidence_domain: str

    def registry_copy(self, dest: Path, live: bool = True) -> Path:
        """A copy of the registry; ``live``: every domain's v1 made live."""
        from rerank.model.registry import Registry

        dest = Path(dest)
        shutil.copytree(self.registry_dir, dest)
        if live:
            reg = Registry(dest)
            reg.release("synthetic", {d: "v1" for d in self.manifest["domains"]},
                        {"action": "promote", "verdict": "test fixture", "forced": True})
        return dest


@pytest.fixture(scope="session")
def live_world(tmp_path_factory) -> LiveWorld:
    from rerank.hypotheses.prepare import prepare
    from rerank.training.train import train

    out = tmp_path_factory.mktemp("live_world")
    cfg = compose_config("prepare", [f"paths.output_dir={out}", "data.synthetic.n_utterances=1500", "recognizers.folds=2"])
    manifest = prepare(cfg)
    evidence_domain = manifest["domains"][0]
    for d in manifest["domains"]:
        features = [] if d == evidence_domain else ["features=base"]
        result = train(compose_config("train", [f"paths.output_dir={out}", f"domain={d}", "loss=crossentropy", "threads=1",
                                                "~logger", f"paths.log_dir={out / 'logs'}", *features]))
        assert result["version"] == "v1"
    return LiveWorld(cfg, manifest, out, out / "registry", evidence_domain)
