from word_lengths import word_lengths


def test_word_lengths():
    assert word_lengths("a bb ccc") == {"a": 1, "bb": 2, "ccc": 3}
