from running_total import running_total


def test_running_total():
    assert list(running_total([1, 2, 3])) == [1, 3, 6]
    assert list(running_total([])) == []
