"""A table set is complete or absent: killed builds, mixed files, names, paths.data_dir and file modes."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, edit_table, prepare_config
from rerank.corpus.utterance import SPLITS
from rerank.hypotheses.prepare import prepare
from rerank.hypotheses.tables import TablesCorrupt, TableSet, TablesMissing

_KILLED_BUILD = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from conftest import prepare_config
import rerank.hypotheses.prepare as prep
import rerank.hypotheses.tables as tables

point, calls = {point!r}, [0]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def counting(real, n):
    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] > n:
            die()
        return real(*args, **kwargs)
    return wrapper

if point == "fitting":
    prep.dc_job = counting(prep.dc_job, 3)
elif point == "writing":
    tables.TableSetWriter.write_table = counting(tables.TableSetWriter.write_table, 5)
elif point == "before the swap":
    tables.os.rename = counting(tables.os.rename, 0)
elif point == "between the renames":
    tables.os.rename = counting(tables.os.rename, 1)
# a rebuild for a changed corpus (another seed) under the same name
prep.prepare(prepare_config({out!r}, "data.synthetic.seed=1", "recognizers.n_jobs=1"))
"""


def leftovers(data_root: Path) -> list[str]:
    return sorted(p.name for p in data_root.iterdir() if p.name.startswith((".staging-", ".old-")))


def assert_same_set(a: TableSet, b: TableSet) -> None:
    assert a.manifest["corpus_hash"] == b.manifest["corpus_hash"]
    for d in a.domains:
        for s in SPLITS:
            assert a.read(d, s).equals(b.read(d, s)), (d, s)
    for s in SPLITS:
        assert a.read_utterances(s).equals(b.read_utterances(s)), s


@pytest.mark.parametrize("point", ["fitting", "writing", "before the swap", "between the renames"])
def test_a_killed_rebuild_never_leaves_a_mixed_set(prepared, tmp_path, capsys, point):
    """Kill a rebuild for a changed corpus at several points; the rerun on the original corpus gets the original set."""
    work = prepared.copy_to(tmp_path / "work")
    code = _KILLED_BUILD.format(tests=str(REPO / "tests"), point=point, out=str(work.output_dir))
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    root = work.output_dir / "data"
    if point == "between the renames":
        # the old set was moved away and the new one not yet in: absent, never half there
        with pytest.raises(TablesMissing):
            TableSet.open(work.data_dir)
    else:
        TableSet.open(work.data_dir).verify()  # the original set, untouched
    assert leftovers(root), "the kill left no staging folder: it did not hit the build"

    manifest = prepare(prepare_config(work.output_dir, "recognizers.n_jobs=1"))
    out = capsys.readouterr().out
    assert ("reusing" in out) == (point != "between the renames"), out
    assert leftovers(root) == []
    got = TableSet.open(work.data_dir)
    got.verify()
    assert got.manifest["corpus_hash"] == manifest["corpus_hash"] == prepared.manifest["corpus_hash"]
    assert_same_set(got, TableSet.open(prepared.data_dir))


def test_a_set_with_a_file_from_another_build_is_refused_and_rebuilt(prepared, tmp_path, capsys):
    """A table swapped in from elsewhere fails the checksum: readers refuse it and prepare does not reuse it."""
    work = prepared.copy_to(tmp_path / "work")
    domain = prepared.manifest["domains"][0]
    edit_table(work.data_dir, f"{domain}/dev.parquet", "dc", lambda x: x[::-1], reseal=False)
    with pytest.raises(TablesCorrupt, match=f"{domain}/dev.parquet"):
        TableSet.open(work.data_dir).read(domain, "dev")
    prepare(prepare_config(work.output_dir, "recognizers.n_jobs=1"))
    out = capsys.readouterr().out
    assert "not reusing" in out and "checksum" in out
    assert_same_set(TableSet.open(work.data_dir), TableSet.open(prepared.data_dir))


def test_paths_data_dir_is_honoured(tmp_path):
    elsewhere = tmp_path / "shared_disk" / "tables"
    manifest = prepare(prepare_config(tmp_path / "out", f"paths.data_dir={elsewhere}", "data.synthetic.n_utterances=200",
                                      "recognizers.n_jobs=1"))
    assert TableSet.open(elsewhere / "synthetic").manifest["corpus_hash"] == manifest["corpus_hash"]
    assert not (tmp_path / "out" / "data").exists()


@pytest.mark.parametrize("name", ["../../x", "../x", ".x", "a/b", "_x"])
def test_an_unsafe_data_name_is_refused(tmp_path, name):
    with pytest.raises(ValueError, match="data.name"):
        prepare(prepare_config(tmp_path / "a" / "b", f"data.name={name}"))
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == []


@pytest.fixture
def umask():
    def set_to(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    yield set_to
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_files_follow_the_umask(tmp_path, umask, mask):
    """Tables, manifests, registry files and reports are readable by whom the umask says (not 0600)."""
    import numpy as np

    from rerank.io import write_json
    from rerank.model.registry import Registry
    from test_import import run_import
    from test_registry import make_model, publish

    umask(mask)
    run_import(tmp_path / "imp")
    reg = Registry(tmp_path / "registry")
    publish(reg, make_model(1))
    reg.set_live("toy", "Music", "v1", action="promote", verdict="accepted")
    write_json(tmp_path / "reports" / "metrics.json", {"x": np.float64(1.0)})
    from rerank.plots import feature_weights, save

    save(feature_weights({"Music": {"a": 1.0}}), tmp_path / "reports" / "w.png")
    want_file, want_dir = 0o666 & ~mask, 0o777 & ~mask
    seen = 0
    for p in tmp_path.rglob("*"):
        if p.name.endswith(".lock"):
            continue
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (want_dir if p.is_dir() else want_file), (str(p), oct(mode))
        seen += 1
    assert seen > 30
