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
])
def test_cases(output, refs, expected):
    assert is_correct(output, refs) is expected


def test_normalize_form():
    assert normalize("The São Paulo  Team & Co.") == "sao paulo team and co"
    assert normalize("two hundred five") == "205"


def test_bootstrap_ci():
    lo, hi = bootstrap_ci([True] * 30 + [False] * 70)
    assert lo < 0.30 < hi and 0.2 < lo and hi < 0.4
    assert bootstrap_ci([True] * 10) == (1.0, 1.0)
    assert bootstrap_ci([True] * 30 + [False] * 70) == (lo, hi), "seeded: reproducible"
