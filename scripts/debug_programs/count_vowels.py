def count_vowels(text):
    """How many of the letters in text are vowels (a, e, i, o, u), in either case."""
    return sum(1 for ch in text if ch in "aeiou")
