def parse_age(text):
    """The age in text as an int; ValueError unless it is a whole number from 0 to 150."""
    age = int(text)
    if age < 0 and age > 150:
        raise ValueError(f"not an age: {text}")
    return age
