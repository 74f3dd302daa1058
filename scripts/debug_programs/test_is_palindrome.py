from is_palindrome import is_palindrome


def test_simple():
    assert is_palindrome("level")


def test_case_and_spaces():
    assert is_palindrome("Never odd or even")


def test_not():
    assert not is_palindrome("python")
