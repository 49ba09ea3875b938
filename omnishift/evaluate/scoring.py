"""Spoken-QA scoring: is any reference answer contained in the model's output?

The rule follows the public LLaMA Questions / Web Questions evaluations (Spectron, LLaMA-Omni,
Moshi report "accuracy": a reference answer appearing in the generated answer), made robust to
surface form. Both the output and each reference are normalised the same way, then the output is
correct when a normalised reference occurs in it as a whole-word sequence:

1. Unicode NFKD, accents dropped (``Brasília`` == ``Brasilia``, ``Beyoncé`` == ``Beyonce``);
2. lower case; ``&`` -> ``and``;
3. punctuation -> spaces (``Challenger Deep, Mariana Trench`` -> ``challenger deep mariana trench``);
4. articles ``a``/``an``/``the`` removed (SQuAD-style);
5. number words -> digits (``eight`` == ``8``, ``twenty-one`` == ``21``, ``one hundred`` == ``100``),
   thousands separators dropped (``1,000`` == ``1000``);
6. whitespace collapsed.

An empty output is never correct; an empty reference (after normalisation) is ignored.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np

_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()) if i >= 2}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
_ARTICLES = {"a", "an", "the"}


def _numbers_to_digits(words: list[str]) -> list[str]:
    """Replace runs of number words by their value (``two hundred five`` -> ``205``)."""
    out, run = [], []

    def flush():
        if not run:
            return
        total, current = 0, 0
        for w in run:
            if w in _UNITS:
                current += _UNITS[w]
            elif w in _TENS:
                current += _TENS[w]
            elif w == "hundred":
                current = max(current, 1) * 100
            else:
                total += max(current, 1) * _SCALES[w]
                current = 0
        out.append(str(total + current))
        run.clear()

    for w in words:
        is_number = w in _UNITS or w in _TENS or w in _SCALES
        if is_number and (run or w not in _SCALES):  # a bare "hundred"/"million" stays a word
            run.append(w)
        elif w == "and" and run and run[-1] in _SCALES:
            continue  # "one hundred and five"
        else:
            flush()
            out.append(w)
    flush()
    return out


def normalize(text: str, keep_articles: bool = False) -> str:
    """The normal form used on both sides of the containment test (see module docstring).

    Args:
        text: any text.
        keep_articles: skip step 4 (word error rates count a missed "the" as an error).

    Returns:
        Space-separated normalised words.
    """
    text = unicodedata.normalize("NFKD", text or "")
    text = "".join(c for c in text if not unicodedata.combining(c)).lower().replace("&", " and ")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000 -> 1000
    text = re.sub(r"[^\w\s]|_", " ", text)
    words = [w for w in text.split() if keep_articles or w not in _ARTICLES]
    return " ".join(_numbers_to_digits(words))


def is_correct(output: str, references: list[str]) -> bool:
    """True when any normalised reference occurs in the normalised output as whole words."""
    out = f" {normalize(output)} "
    if not out.strip():
        return False
    return any(ref and f" {ref} " in out for ref in (normalize(r) for r in references))


def bootstrap_ci(verdicts: list[bool], n_boot: int = 10000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the accuracy (fixed seed, so reports are reproducible)."""
    v = np.asarray(verdicts, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no verdicts to bootstrap")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)
