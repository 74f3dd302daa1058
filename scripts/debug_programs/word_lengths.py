def word_lengths(sentence):
    """A dict from each word of the sentence to its length."""
    return {word: len(sentence) for word in sentence.split()}
