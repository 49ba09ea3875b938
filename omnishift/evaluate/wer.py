"""Word error rate of ASR transcripts, for the cascade baseline (how much the ASR step loses).

Rule. Both the reference (the benchmark's question text) and the transcript are normalised with
the QA scorer's normaliser (:func:`omnishift.evaluate.scoring.normalize`) *keeping articles*:
accents folded, lower case, ``&`` -> ``and``, punctuation -> spaces, number words -> digits
(``twenty-one`` == ``21``, ``1,000`` == ``1000``). Formatting that Whisper and the question
writers choose differently is therefore not counted as an error, while every dropped, added or
changed word (articles included) is. The errors of one item are the word-level Levenshtein
distance (substitutions + deletions + insertions, each costing 1) between the two word lists;
the corpus WER is the sum of errors over the sum of reference words (not a mean of per-item
rates, which would over-weight short questions).
"""

from __future__ import annotations

from omnishift.evaluate.scoring import normalize


def wer_words(text: str) -> list[str]:
    """The words WER compares: :func:`normalize` with articles kept, split on spaces."""
    return normalize(text, keep_articles=True).split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance between two word lists (unit costs).

    Args:
        ref: reference words.
        hyp: hypothesis words.

    Returns:
        The least number of substitutions, deletions and insertions turning ``ref`` into ``hyp``.
    """
    prev = list(range(len(hyp) + 1))  # distance from ref[:0] to hyp[:j]
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """Errors and reference length of one item, after normalisation.

    Returns:
        ``(errors, reference_words)``.
    """
    ref, hyp = wer_words(reference), wer_words(hypothesis)
    return edit_distance(ref, hyp), len(ref)


def corpus_wer(pairs: list[tuple[str, str]]) -> dict:
    """Corpus WER of ``(reference, hypothesis)`` pairs.

    Returns:
        ``{"wer", "errors", "reference_words", "n"}``.

    Raises:
        ValueError: no pairs, or references without a single word (WER is undefined).
    """
    if not pairs:
        raise ValueError("no transcripts to score")
    errors = words = 0
    for ref, hyp in pairs:
        e, n = word_errors(ref, hyp)
        errors, words = errors + e, words + n
    if words == 0:
        raise ValueError("the references have no words after normalisation; WER is undefined")
    return {"wer": errors / words, "errors": errors, "reference_words": words, "n": len(pairs)}
