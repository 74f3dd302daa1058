from binary_search import binary_search


def test_found():
    xs = [1, 3, 5, 7, 9]
    for i, x in enumerate(xs):
        assert binary_search(xs, x) == i


def test_missing():
    assert binary_search([1, 3, 5], 4) == -1
    assert binary_search([], 1) == -1
