def second_largest(xs):
    """The second largest distinct value in xs (at least two distinct values)."""
    ordered = sorted(xs)
    return ordered[-2]
