"""import against hostile n-best files and careless names (issue 19): ranks beyond int16, deep nesting, replacing a set."""
from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import REPO
from rerank.corpus.jsonl import CorpusError
from rerank.hypotheses.nbest_import import import_nbest
from rerank.hypotheses.tables import TableSet
from test_import import GOLD, NBEST, assert_refused, files, hyp, import_config, run_import

DEEP = '{"utt_id": "a1", "domain": "music", "intent": "x", "slots": ' + "[" * 1100 + "]" * 1100 + "}"
BIG_RANK = hyp("a2", "music", "music_play", rank=40000)  # the only one of its list: nothing else refuses it
MANY_SLOTS = hyp("a1", "music", "music_play", [("s", "x")] * 33000)  # (within max_line_bytes)


def rows(manifest) -> int:
    return sum(n for r in manifest["rows"].values() for n in r.values())


# --------------------------------------------------------------------------- 7. file, line and field; on_error=skip


@pytest.mark.parametrize("line, what", [(BIG_RANK, "field 'rank'"), (DEEP, "nested too deep"),
                                        (MANY_SLOTS, "field 'slots'")])
def test_a_rank_beyond_int16_deep_nesting_or_too_many_slots_name_the_file_and_line(tmp_path, line, what):
    msg = assert_refused(tmp_path, [*NBEST, line], GOLD, "nbest.jsonl:8", what)
    assert "on_error=skip" in msg


@pytest.mark.parametrize("line", [BIG_RANK, DEEP, MANY_SLOTS])
def test_on_error_skip_skips_them_and_imports_the_rest(tmp_path, line):
    manifest = run_import(tmp_path, [*NBEST, line], GOLD, "on_error=skip")
    assert len(manifest["skipped_lines"]) == 1 and "nbest.jsonl:8" in manifest["skipped_lines"][0]
    assert rows(manifest) == len(NBEST)
    assert TableSet.open(tmp_path / "out" / "data" / "acme").read("music", "train")["utt_id"].to_pylist() == ["a1", "a1"]


def test_a_parquet_rank_beyond_int16_names_the_row(tmp_path):
    nbest, gold = files(tmp_path)
    records = [{**h, "rank": h.get("rank"), "device": h.get("device")} for h in [*NBEST, BIG_RANK]]
    path = tmp_path / "inputs" / "nbest.parquet"
    pq.write_table(pa.Table.from_pylist(records), path)
    with pytest.raises(CorpusError) as err:
        import_nbest(import_config(tmp_path, path, gold))
    assert f"{path}: row 8" in str(err.value) and "field 'rank'" in str(err.value) and "32767" in str(err.value)
    manifest = import_nbest(import_config(tmp_path, path, gold, "on_error=skip"))
    assert rows(manifest) == len(NBEST) and "row 8" in manifest["skipped_lines"][0]


def test_the_command_says_file_line_and_field(tmp_path):
    """What a user of ``scripts/import.py`` sees: the file, the line and the field, not an Arrow overflow."""
    nbest, gold = files(tmp_path, [*NBEST, BIG_RANK])
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "import.py"), "name=acme", f"nbest={nbest}",
                           f"gold={gold}", f"paths.output_dir={tmp_path / 'out'}", "hydra.run.dir=" + str(tmp_path / "h")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and f"{nbest}:8" in out and "field 'rank'" in out, out[-2000:]
    assert "ArrowInvalid" not in out and "RecursionError" not in out


# --------------------------------------------------------------------------- 8. no silent replacement


def test_import_does_not_replace_an_existing_set_unless_told(tmp_path):
    first = run_import(tmp_path)
    path = tmp_path / "out" / "data" / "acme"
    before = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    other = [h for h in NBEST if h["utt_id"] != "a3"]
    with pytest.raises(FileExistsError) as err:
        run_import(tmp_path, other)
    msg = str(err.value)
    assert str(path) in msg and "overwrite=true" in msg and "imported" in msg, msg
    assert {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()} == before
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".staging-")] == []
    second = run_import(tmp_path, other, GOLD, "overwrite=true")
    assert rows(second) == rows(first) - 1 and TableSet.open(path).manifest["rows"] == second["rows"]


def test_import_does_not_replace_a_prepared_set_or_a_stray_folder(prepared, tmp_path):
    work = prepared.copy_to(tmp_path / "work")
    nbest, gold = files(tmp_path)
    cfg = import_config(tmp_path, nbest, gold, f"paths.output_dir={work.output_dir}", name=work.data_dir.name)
    with pytest.raises(FileExistsError, match="prepared.*overwrite=true"):
        import_nbest(cfg)
    assert TableSet.open(work.data_dir).manifest == prepared.manifest
    stray = work.output_dir / "data" / "notes"
    stray.mkdir()
    (stray / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not a complete table set"):
        import_nbest(import_config(tmp_path, nbest, gold, f"paths.output_dir={work.output_dir}", name="notes"))
    assert (stray / "mine.txt").read_text() == "keep"
