"""Summary statistics."""
import math


def mean(xs):
    return sum(xs) / len(xs)


def std(xs):
    """The population standard deviation."""
    m = mean(xs)
    return math.sqrt(sum((x - m) for x in xs) / len(xs))
