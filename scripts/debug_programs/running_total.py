def running_total(xs):
    """Yield the sum of xs[0..i] for each i."""
    total = 0
    for x in xs:
        yield total
        total += x
