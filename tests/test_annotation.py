import pytest

from rerank.corpus.annotation import AnnotationError, parse_annotation, tags_to_slots


def test_parse_two_slots():
    p = parse_annotation("wake me up at [time : five am] [date : this week]")
    assert p.tokens == ("wake", "me", "up", "at", "five", "am", "this", "week")
    assert p.tags == ("O", "O", "O", "O", "B-time", "I-time", "B-date", "I-date")
    assert p.slots == (("time", "five am"), ("date", "this week"))


def test_value_with_colon_and_extra_spaces():
    p = parse_annotation("set  [time :  10:30  pm ]")
    assert p.slots == (("time", "10:30 pm"),)
    assert p.tokens == ("set", "10:30", "pm")


def test_no_slots():
    p = parse_annotation("what time is it")
    assert p.tags == ("O",) * 4 and p.slots == ()


@pytest.mark.parametrize(
    "annot, message",
    [
        ("play [song_name : thriller", "never closed"),
        ("play song_name : thriller]", "closes no"),
        ("play [song_name : [artist_name : x]]", "nested"),
        ("play [song_name thriller]", "no ' : '"),
        ("play [ : thriller]", "bad type"),
        ("play [song name : thriller]", "bad type"),
        ("play [song_name : ]", "empty value"),
        ("   ", "empty utterance"),
    ],
)
def test_malformed(annot, message):
    with pytest.raises(AnnotationError, match=message):
        parse_annotation(annot)


def test_tags_round_trip():
    p = parse_annotation("play [song_name : mary poppins] by [artist_name : julie andrews] [song_name : x]")
    assert tags_to_slots(p.tokens, p.tags) == p.slots


def test_stray_inside_tag_starts_a_slot():
    assert tags_to_slots(["a", "b", "c"], ["O", "I-x", "I-x"]) == (("x", "b c"),)
    assert tags_to_slots(["a", "b"], ["B-x", "I-y"]) == (("x", "a"), ("y", "b"))
