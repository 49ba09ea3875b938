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
   one number per well-formed phrase (``one two`` == ``1 2``, not ``3``), thousands separators
   dropped (``1,000`` == ``1000``);
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


def _kind(w: str) -> str | None:
    """The role of a number word: zero, unit (1-9), teen (10-19), tens, hundred, scale; None otherwise."""
    if w in _UNITS:
        return "zero" if w == "zero" else "unit" if _UNITS[w] < 10 else "teen"
    if w in _TENS:
        return "tens"
    if w == "hundred":
        return "hundred"
    return "scale" if w in _SCALES else None


# which kinds may follow the last word of a number and still belong to it ("twenty" + "one", "hundred" + "five")
_FOLLOWS = {"unit": {"tens", "hundred", "scale"}, "teen": {"hundred", "scale"}, "tens": {"hundred", "scale"},
            "hundred": {"unit", "teen", "tens"}, "scale": {"unit", "teen", "tens", "hundred"}, "zero": set()}


class _Number:
    """A number being read word by word: ``total`` (finished thousands groups) + ``group`` (< 1000)."""

    def __init__(self, w: str):
        self.total, self.group, self.scale, self.last = 0, 0, float("inf"), None
        self.add(w)

    def continues(self, w: str) -> bool:
        """Whether ``w`` extends this number (else it ends here: "one two" is 1 and 2, not 3)."""
        k = _kind(w)
        if k is None or self.last not in _FOLLOWS[k]:
            return False
        if k == "hundred":
            return self.group < 100  # "nineteen hundred", not "one hundred hundred"
        if k == "scale":
            return _SCALES[w] < self.scale  # "two million three thousand", not "two thousand thousand"
        return True

    def add(self, w: str) -> None:
        k = _kind(w)
        if k == "hundred":
            self.group *= 100
        elif k == "scale":
            self.total += self.group * _SCALES[w]
            self.group, self.scale = 0, _SCALES[w]
        else:
            self.group += _UNITS.get(w, _TENS.get(w, 0))
        self.last = k

    def __str__(self) -> str:
        return str(self.total + self.group)


def _numbers_to_digits(words: list[str]) -> list[str]:
    """Replace number words by digits, one number per well-formed phrase.

    A number starts at a units/teens/tens word and goes on while each next word can continue it
    (``two hundred five`` -> ``205``, ``one hundred and five`` -> ``105``, ``two thousand twenty``
    -> ``2020``); a word that cannot (a unit after a unit, a tens word after a tens or units word)
    starts a new number, so ``one two three`` -> ``1 2 3`` and ``seventy seventy`` -> ``70 70``.
    A bare ``hundred``/``million`` stays a word; ``and`` is dropped only between a ``hundred`` or
    scale word and a word that continues the number.
    """
    out, num = [], None
    for i, w in enumerate(words):
        if num is not None and num.continues(w):
            num.add(w)
            continue
        nxt = words[i + 1] if i + 1 < len(words) else None
        if (w == "and" and num is not None and num.last in ("hundred", "scale") and nxt is not None
                and _kind(nxt) in ("unit", "teen", "tens") and num.continues(nxt)):
            continue  # "one hundred and five"
        if num is not None:
            out.append(str(num))
            num = None
        if _kind(w) in ("zero", "unit", "teen", "tens"):
            num = _Number(w)
        else:
            out.append(w)
    if num is not None:
        out.append(str(num))
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


def paired_bootstrap_ci(a: list[float], b: list[float], n_boot: int = 10000, seed: int = 0,
                        level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``a - b`` over the same items and its percentile bootstrap interval, resampling items.

    Why paired: two readings (or methods) answer the same questions, so most of the per-question
    variance is shared; resampling the per-item differences gives a much tighter interval on the
    difference than two independent accuracy intervals would suggest.

    Returns:
        ``(mean difference, low, high)``.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size == 0 or len(a) != len(b):
        raise ValueError(f"paired bootstrap needs two equally long, non-empty lists (got {len(a)} and {len(b)})")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(d.mean()), float(lo), float(hi)
