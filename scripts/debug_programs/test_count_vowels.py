from count_vowels import count_vowels

assert count_vowels("hello") == 2
assert count_vowels("HELLO World") == 3
assert count_vowels("xyz") == 0
