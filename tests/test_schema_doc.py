from pathlib import Path

from rerank.hypotheses.docs import render_data_doc


def test_data_doc_is_generated_from_the_schema():
    doc = Path(__file__).parents[1] / "docs" / "DATA.md"
    assert doc.read_text() == render_data_doc(), "docs/DATA.md is stale: regenerate it with render_data_doc()"


def test_the_documented_examples_import(tmp_path):
    """The two examples of docs/DATA.md are valid input: the gold parses and the hypothesis is labelled right."""
    import json

    from conftest import compose_config
    from rerank.hypotheses.docs import GOLD_EXAMPLE
    from rerank.hypotheses.nbest import EXAMPLE
    from rerank.hypotheses.nbest_import import import_nbest
    from rerank.hypotheses.tables import TableSet

    gold = [{**GOLD_EXAMPLE, "id": f"u-{i}", "partition": s} for i, s in enumerate(("train", "dev"))] + [GOLD_EXAMPLE]
    (tmp_path / "gold.jsonl").write_text("".join(json.dumps(g) + "\n" for g in gold))
    (tmp_path / "nbest.jsonl").write_text(json.dumps(EXAMPLE) + "\n")
    import_nbest(compose_config("import", ["name=doc", f"nbest={tmp_path / 'nbest.jsonl'}", f"gold={tmp_path / 'gold.jsonl'}",
                                           f"paths.output_dir={tmp_path / 'out'}"]))
    [row] = TableSet.open(tmp_path / "out" / "data" / "doc").read("Music", "test").to_pylist()
    assert (row["intent"], row["ie"], row["sem_errors"]) == ("Music_play_music", 0, 0)
