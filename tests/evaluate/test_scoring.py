"""The QA scorer on hand-written cases."""

from __future__ import annotations

import pytest

from omnishift.evaluate.scoring import bootstrap_ci, is_correct, normalize


@pytest.mark.parametrize("output,refs,expected", [
    ("The capital of France is Paris.", ["Paris"], True),
    ("It is Brasilia, of course", ["Brasília"], True),              # accents folded
    ("Beyoncé sang it", ["Beyonce"], True),
    ("A spider has eight legs.", ["8"], True),                      # words -> digits
    ("Spiders have 8 legs", ["eight"], True),
    ("about twenty-one years", ["21"], True),
    ("It weighs one hundred and five kilos", ["105"], True),
    ("roughly 1,000 people", ["one thousand"], True),
    ("the deepest point is the Challenger Deep in the Mariana Trench", ["Challenger Deep, Mariana Trench"], False),
    ("Challenger Deep, Mariana Trench", ["Challenger Deep, Mariana Trench"], True),  # punctuation
    ("They speak Jamaican English.", ["Jamaican Creole English Language", "Jamaican English"], True),  # multi-answer
    ("The Amazon", ["the amazon river", "Amazon"], True),            # articles
    ("Parisian food is great", ["Paris"], False),                    # whole words only
    ("", ["Paris"], False),                                          # empty output
    ("Paris", [""], False),                                          # empty reference ignored
    ("eighteen", ["8"], False),
    ("Count: one two three", ["6"], False),                          # adjacent numbers are not added
    ("one two three", ["1 2 3"], True),
    ("seven times three is twenty one", ["Twenty one"], True),
    ("It was in two thousand twenty", ["2020"], True),
])
def test_cases(output, refs, expected):
    assert is_correct(output, refs) is expected


def test_normalize_form():
    assert normalize("The São Paulo  Team & Co.") == "sao paulo team and co"
    assert normalize("two hundred five") == "205"


@pytest.mark.parametrize("text,expected", [
    ("one two three", "1 2 3"),                      # a unit after a unit starts a new number
    ("one two", "1 2"),
    ("twenty one", "21"),
    ("twenty-one", "21"),
    ("seventy seventy", "70 70"),                    # a tens word after a tens word
    ("twenty one thirty two", "21 32"),              # a tens word after a unit
    ("eleven twelve", "11 12"),
    ("twenty eleven", "20 11"),
    ("zero five", "0 5"),
    ("one hundred and five", "105"),
    ("two hundred and twenty two", "222"),
    ("one hundred twenty one", "121"),
    ("two thousand twenty", "2020"),
    ("one thousand and one", "1001"),
    ("nineteen hundred", "1900"),
    ("three million two hundred thousand", "3200000"),
    ("one hundred thousand", "100000"),
    ("two thousand thousand", "2000 thousand"),      # a scale cannot repeat
    ("one hundred and paris", "100 and paris"),      # "and" kept when no number follows
    ("five and six", "5 and 6"),
    ("a hundred", "hundred"),                        # a bare scale word stays a word
    ("seven 7 seven", "7 7 7"),
])
def test_number_words(text, expected):
    assert normalize(text) == expected


def test_bootstrap_ci():
    lo, hi = bootstrap_ci([True] * 30 + [False] * 70)
    assert lo < 0.30 < hi and 0.2 < lo and hi < 0.4
    assert bootstrap_ci([True] * 10) == (1.0, 1.0)
    assert bootstrap_ci([True] * 30 + [False] * 70) == (lo, hi), "seeded: reproducible"


def test_paired_bootstrap_by_hand_and_against_a_loop():
    import numpy as np

    from omnishift.evaluate.scoring import paired_bootstrap_ci

    assert paired_bootstrap_ci([1, 0, 1], [1, 0, 1]) == (0.0, 0.0, 0.0)
    assert paired_bootstrap_ci([1, 1], [0, 0]) == (1.0, 1.0, 1.0)
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    mean, lo, hi = paired_bootstrap_ci(a.tolist(), b.tolist(), n_boot=2000, seed=7)
    r = np.random.default_rng(7)
    idx = r.integers(0, 50, size=(2000, 50))
    ref = [float((a[i] - b[i]).mean()) for i in idx]  # the same draws, one resample at a time
    assert mean == float((a - b).mean())
    assert (lo, hi) == tuple(float(x) for x in np.quantile(ref, [0.025, 0.975]))
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap_ci([1], [1, 0])
