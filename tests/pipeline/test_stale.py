"""A finished run is not silently reused under a changed config (issue 12.4)."""

from __future__ import annotations

import io

import pytest

from omnishift.pipeline import stages
from omnishift.pipeline.config import experiment_from_dict
from omnishift.pipeline.runner import read_marker, run_experiment


@pytest.fixture()
def hello(monkeypatch):
    calls = []

    def stage_hello(ctx, out):
        calls.append(ctx.cfg.evaluate.batch_size)
        return {}

    monkeypatch.setitem(stages.STAGES, "hello", stages.Stage(stage_hello, False, "a greeting"))
    return calls


def _cfg(tmp_path, batch_size):
    return experiment_from_dict({"name": "x", "out_root": str(tmp_path), "stages": ["hello"],
                                 "evaluate": {"batch_size": batch_size}})


def test_changed_config_is_refused_then_redone_or_kept_on_request(tmp_path, hello):
    run_experiment(_cfg(tmp_path, 4), stream=None)
    before = (tmp_path / "x" / "experiment.yaml").read_text()
    with pytest.raises(ValueError, match=r"stages \['hello'\] were finished with another experiment config.*"
                                         r"--redo hello.*--accept-stale"):
        run_experiment(_cfg(tmp_path, 8), stream=None)
    assert (tmp_path / "x" / "experiment.yaml").read_text() == before  # the refusal changed nothing
    err = io.StringIO()
    run_experiment(_cfg(tmp_path, 8), stream=err, accept_stale=True)
    assert hello == [4] and "keeping stages ['hello']" in err.getvalue()
    run_experiment(_cfg(tmp_path, 8), redo=["hello"], stream=None)
    assert hello == [4, 8] and read_marker(tmp_path / "x", "hello")["produces"] == "a greeting"
    run_experiment(_cfg(tmp_path, 8), stream=None)  # now current: skipped without complaint
    assert hello == [4, 8]
