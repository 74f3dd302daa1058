from second_largest import second_largest


class TestSecondLargest:
    def test_plain(self):
        assert second_largest([3, 1, 2]) == 2

    def test_repeated_maximum(self):
        assert second_largest([5, 5, 4]) == 4
