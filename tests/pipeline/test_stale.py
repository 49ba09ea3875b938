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
    with pytest.raises(ValueError, match=r"stages \['hello'\] were finished from other inputs.*config keys it reads changed.*"
                                         r"--redo hello.*--accept-stale"):
        run_experiment(_cfg(tmp_path, 8), stream=None)
    assert (tmp_path / "x" / "experiment.yaml").read_text() == before  # the refusal changed nothing
    err = io.StringIO()
    run_experiment(_cfg(tmp_path, 8), stream=err, accept_stale=True)
    assert hello == [4] and "keeping stale stages ['hello']" in err.getvalue()
    run_experiment(_cfg(tmp_path, 8), redo=["hello"], stream=None)
    assert hello == [4, 8] and read_marker(tmp_path / "x", "hello")["produces"] == "a greeting"
    run_experiment(_cfg(tmp_path, 8), stream=None)  # now current: skipped without complaint
    assert hello == [4, 8]


def test_a_stage_is_stale_only_when_what_it_depends_on_changed(tmp_path, monkeypatch):
    """Per-stage fingerprints: an evaluation setting re-runs evaluation, not the training before it;
    a data setting re-runs both (evaluation uses the trained models)."""
    calls = []
    for name, reads, after in (("first", ("data",), ()), ("second", ("evaluate",), ("first",))):
        monkeypatch.setitem(stages.STAGES, name, stages.Stage(lambda ctx, out, n=name: calls.append(n) or {}, False,
                                                              name, reads, after))

    def cfg(batch_size=4, limit=8):
        return experiment_from_dict({"name": "x", "out_root": str(tmp_path), "stages": ["first", "second"],
                                     "data": {"train_limit": limit}, "evaluate": {"batch_size": batch_size}})

    run_experiment(cfg(), stream=None)
    with pytest.raises(ValueError, match=r"stages \[.second.\] were finished"):
        run_experiment(cfg(batch_size=8), stream=None)
    run_experiment(cfg(batch_size=8), redo=["second"], stream=None)
    assert calls == ["first", "second", "second"]
    with pytest.raises(ValueError, match=r"stages \['first', 'second'\] were finished"):
        run_experiment(cfg(batch_size=8, limit=9), stream=None)


def test_stage_keys_of_the_shipped_stages():
    from omnishift.pipeline.runner import fingerprint
    from omnishift.pipeline.stages import stage_keys

    assert stage_keys("train") == {"model", "train", "data", "evaluate.benchmarks", "evaluate.modes", "importance",
                                   "align"}
    assert "evaluate" in stage_keys("evaluate") and stage_keys("report") is None
    a = experiment_from_dict({"name": "x", "evaluate": {"batch_size": 4}})
    b = experiment_from_dict({"name": "x", "evaluate": {"batch_size": 8}})
    same = [s for s in stages.STAGES if fingerprint(a, s) == fingerprint(b, s)]
    assert same == ["data", "importance", "deactivation", "align", "train", "importance_after",
                    "deactivation_after", "shift", "change"]
