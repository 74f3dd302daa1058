def clamp(x, low, high):
    """x limited to [low, high]."""
    if x < low:
        return high
    if x > high:
        return high
    return x
