import json

import pytest

from rerank.corpus.massive import CorpusError, ReadReport, read_massive

GOOD = {"id": "1", "partition": "train", "scenario": "music", "intent": "music_play",
        "utt": "play thriller", "annot_utt": "play [song_name : thriller]"}


def write(tmp_path, lines, name="c.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_reads_good_lines_and_context(tmp_path):
    path = write(tmp_path, [GOOD, {**GOOD, "id": "2", "device": "fire_tv", "partition": "test"}])
    utts = read_massive(path)
    assert [u.id for u in utts] == ["1", "2"]
    assert utts[0].slots == (("song_name", "thriller"),)
    assert utts[0].context == {"device": "unknown"}  # absent: constant context
    assert utts[1].context == {"device": "fire_tv"} and utts[1].split == "test"


def test_intent_is_domain_qualified(tmp_path):
    utts = read_massive(write(tmp_path, [{**GOOD, "intent": "play"}]))
    assert utts[0].intent == "music_play"


@pytest.mark.parametrize(
    "line, what",
    [
        ("{not json", "bad JSON"),
        ({k: v for k, v in GOOD.items() if k != "scenario"}, "field 'scenario'"),
        ({**GOOD, "annot_utt": "play [song_name : thriller"}, "never closed"),
        ({**GOOD, "annot_utt": "  "}, "field 'annot_utt'"),
        ({**GOOD, "partition": "holdout"}, "field 'partition'"),
        ({**GOOD, "scenario": "../etc"}, "field 'scenario'"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, line, what):
    path = write(tmp_path, [GOOD, {**GOOD, "id": "2"}, line])
    with pytest.raises(CorpusError) as err:
        read_massive(path)
    assert f"{path}:3" in str(err.value) and what in str(err.value)


def test_skip_counts_instead_of_dropping_silently(tmp_path):
    path = write(tmp_path, [GOOD, "{bad", {**GOOD, "id": "3", "annot_utt": "x [a : b"}, {**GOOD, "id": "4"}])
    report = ReadReport()
    utts = read_massive(path, on_error="skip", report=report)
    assert [u.id for u in utts] == ["1", "4"]
    assert report.lines == 4 and len(report.skipped) == 2
    assert f"{path}:2" in report.skipped[0] and f"{path}:3" in report.skipped[1]
    assert "2 skipped" in report.summary()


def test_duplicate_id(tmp_path):
    with pytest.raises(CorpusError, match="duplicate id '1'"):
        read_massive(write(tmp_path, [GOOD, GOOD]))


def test_folder_of_files(tmp_path):
    write(tmp_path, [GOOD], "train.jsonl")
    write(tmp_path, [{**GOOD, "id": "9", "partition": "dev"}], "dev.jsonl")
    assert sorted(u.id for u in read_massive(tmp_path)) == ["1", "9"]


def test_missing_path(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        read_massive(tmp_path / "nope.jsonl")


def test_a_byte_that_is_not_utf8_names_file_line_and_column(tmp_path):
    path = tmp_path / "c.jsonl"
    good = json.dumps(GOOD).encode()
    bad = json.dumps({**GOOD, "id": "2"}).encode().replace(b"thriller]", b"thr\xe9ller]")
    path.write_bytes(good + b"\n" + bad + b"\n" + json.dumps({**GOOD, "id": "3"}).encode() + b"\n")
    with pytest.raises(CorpusError) as err:
        read_massive(path)
    assert f"{path}:2" in str(err.value) and "0xe9" in str(err.value) and "not UTF-8" in str(err.value)
    # data.on_error=skip skips and counts it, like any malformed line
    report = ReadReport()
    assert [u.id for u in read_massive(path, on_error="skip", report=report)] == ["1", "3"]
    assert len(report.skipped) == 1 and f"{path}:2" in report.skipped[0]


def test_an_oversized_line_is_refused_without_reading_it_whole(tmp_path):
    path = tmp_path / "c.jsonl"
    huge = json.dumps({**GOOD, "id": "2", "annot_utt": "la " * 200_000})
    path.write_text("\n".join([json.dumps(GOOD), huge, json.dumps({**GOOD, "id": "3"})]) + "\n")
    with pytest.raises(CorpusError) as err:
        read_massive(path, max_line_bytes=100_000)
    assert f"{path}:2" in str(err.value) and "longer than 100000 bytes" in str(err.value)
    report = ReadReport()
    assert [u.id for u in read_massive(path, on_error="skip", report=report, max_line_bytes=100_000)] == ["1", "3"]
    assert report.lines == 3
    # within the byte limit, the token cap refuses it
    with pytest.raises(CorpusError) as err:
        read_massive(path, max_tokens=512)
    assert f"{path}:2" in str(err.value) and "200000 tokens" in str(err.value) and "max_tokens=512" in str(err.value)
