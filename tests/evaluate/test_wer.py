"""Word error rate on hand-counted cases."""

from __future__ import annotations

import pytest

from omnishift.evaluate.wer import corpus_wer, edit_distance, wer_words, word_errors


@pytest.mark.parametrize("ref,hyp,errors,words", [
    ("the cat sat on the mat", "the cat sit on mat", 2, 6),          # 1 substitution + 1 deletion
    ("How many legs does a spider have?", "how many legs does a spider have", 0, 7),  # case, punctuation
    ("Who sang Twenty-One Guns?", "who sang 21 guns", 0, 4),          # number words == digits
    ("What is the capital of France?", "what is capital of france", 1, 6),  # a dropped article counts
    ("a b c", "", 3, 3),                                              # all deleted
    ("a b", "b a", 2, 2),                                              # a swap is 2 edits, not 1
    ("Brasília", "Brasilia", 0, 1),                                   # accents folded
    ("name a color", "name a color please now", 2, 3),                # 2 insertions
])
def test_word_errors(ref, hyp, errors, words):
    assert word_errors(ref, hyp) == (errors, words)


def test_wer_words_keep_articles():
    assert wer_words("The Amazon, a river & 1,000 fish") == ["the", "amazon", "a", "river", "and", "1000", "fish"]


def test_edit_distance_by_hand():
    assert edit_distance([], ["x", "y"]) == 2
    assert edit_distance(list("kitten"), list("sitting")) == 3  # the classic: k->s, e->i, +g
    assert edit_distance(["a"], ["a"]) == 0


def test_corpus_wer_pools_errors():
    # (1 + 1) errors over (2 + 4) reference words, not the mean of 1/2 and 1/4
    w = corpus_wer([("a b", "a c"), ("a b c d", "a b c d e")])
    assert w == {"wer": pytest.approx(2 / 6), "errors": 2, "reference_words": 6, "n": 2}
    with pytest.raises(ValueError, match="no transcripts"):
        corpus_wer([])
    with pytest.raises(ValueError, match="no words"):
        corpus_wer([("?", "x")])
