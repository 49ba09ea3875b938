"""LABEL=DIR arguments are parsed one way everywhere (issue 13.7)."""

from __future__ import annotations

import pytest

from omnishift.schema import parse_labelled


def test_labels_default_to_the_folder_name_and_must_be_unique():
    assert parse_labelled(["a=runs/x", "runs/b/"]) == {"a": "runs/x", "b": "runs/b/"}
    assert parse_labelled(["runs/m"], default_label=lambda p: "model-" + p[-1]) == {"model-m": "runs/m"}
    with pytest.raises(ValueError, match="label 'b' given twice: write LABEL=SCORE_DIR"):
        parse_labelled(["b=x", "y/b"], "SCORE_DIR")
    with pytest.raises(ValueError, match="both parts non-empty"):
        parse_labelled(["=runs/x"])
    assert parse_labelled(["k=a=b"]) == {"k": "a=b"}  # only the first '=' separates
