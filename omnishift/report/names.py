"""Row names shown in tables and figures for the labels runs use (method names, baselines).

A training method's name comes from its registry record (:data:`omnishift.train.methods.METHODS`),
so a new method is named where it is defined; the rows that are not training methods are here.
"""

from __future__ import annotations

#: Rows that are not training methods.
BASELINES = {"no_ft": "No-FT", "cascade": "Cascade (ASR → LLM)", "aligned": "Aligned adaptor, frozen LLM"}


def display(label: str) -> str:
    """The table/figure name of a row label (the label itself when nothing names it)."""
    from omnishift.train.methods import METHODS

    if label in METHODS and METHODS[label].display:
        return METHODS[label].display
    return BASELINES.get(label, label)
