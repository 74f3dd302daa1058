def binary_search(xs, target):
    """The index of target in the sorted list xs, or -1."""
    low, high = 0, len(xs) - 1
    while low < high:
        mid = (low + high) // 2
        if xs[mid] == target:
            return mid
        if xs[mid] < target:
            low = mid + 1
        else:
            high = mid - 1
    return -1
