"""The one reuse rule (omnishift.reuse): content fingerprints, and reuse / resume / redo / refuse."""

from __future__ import annotations

import json
import os

import pytest

from omnishift.reuse import UNIT, StaleUnitError, content_sha256, reuse_unit


def _tree(root):
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "sub" / "b.bin").write_bytes(b"\x00\x01")
    return root


def test_content_fingerprint_sees_bytes_and_names_and_skips_bookkeeping(tmp_path):
    d = _tree(tmp_path / "d")
    h = content_sha256(d)
    for name in ("CLAIM", "DONE", UNIT, ".x.123.tmp"):
        (d / name).write_text("noise")
    assert content_sha256(d) == h  # bookkeeping and interrupted writes are not content
    (d / "a.txt").write_text("alphA")
    changed = content_sha256(d)
    assert changed != h
    os.rename(d / "a.txt", d / "c.txt")
    assert content_sha256(d) not in (h, changed)  # a renamed file is another tree
    assert content_sha256(d, skip={"sub", "c.txt"}) == content_sha256(tmp_path / "d", skip={"sub", "c.txt"})
    with pytest.raises(FileNotFoundError, match="nothing to fingerprint"):
        content_sha256(tmp_path / "missing")


def test_file_fingerprint_is_sha256_and_follows_rewrites(tmp_path):
    import hashlib

    f = tmp_path / "x"
    f.write_bytes(b"one")
    assert content_sha256(f) == hashlib.sha256(b"one").hexdigest()
    f.write_bytes(b"two")  # same size, later mtime: the memo must not answer
    os.utime(f, ns=(1, 10**9 * 10**9))
    assert content_sha256(f) == hashlib.sha256(b"two").hexdigest()


def test_reuse_resume_refuse_and_redo(tmp_path):
    unit = tmp_path / "u"
    done = lambda d: (d / "result").is_file()  # noqa: E731
    a, b = {"model": "m1", "prompt": "plain"}, {"model": "m2", "prompt": "plain"}
    assert reuse_unit(unit, a, what="evaluation", redo=False, fix="FIX", complete=done) is False  # fresh: compute
    assert json.loads((unit / UNIT).read_text())["inputs"] == a
    (unit / "partial").write_text("half")
    assert reuse_unit(unit, a, what="evaluation", redo=False, fix="FIX", complete=done) is False  # resume
    assert (unit / "partial").is_file()
    (unit / "result").write_text("answers of m1")
    assert reuse_unit(unit, a, what="evaluation", redo=False, fix="FIX", complete=done) is True  # reuse
    with pytest.raises(StaleUnitError, match=r"evaluation was made from other inputs \(changed: \['model'\]\); FIX"):
        reuse_unit(unit, b, what="evaluation", redo=False, fix="FIX", complete=done)
    assert (unit / "result").read_text() == "answers of m1"  # a refusal changes nothing
    (unit / "CLAIM").write_text("{}")
    assert reuse_unit(unit, b, what="evaluation", redo=True, fix="FIX", complete=done) is False  # redo: emptied
    assert sorted(p.name for p in unit.iterdir()) == ["CLAIM", UNIT]
    assert json.loads((unit / UNIT).read_text())["inputs"] == b


def test_results_without_a_record_are_never_reused(tmp_path):
    unit = tmp_path / "u"
    unit.mkdir()
    (unit / "summary.json").write_text('{"n": 3, "accuracy": 1.0}')  # complete by count, made by nobody knows what
    with pytest.raises(StaleUnitError, match="no record of what made them"):
        reuse_unit(unit, {"x": 1}, what="evaluation", redo=False, fix="FIX", complete=lambda d: True)
    (unit / UNIT).write_text("{torn")
    with pytest.raises(StaleUnitError, match="record UNIT.json is unreadable"):
        reuse_unit(unit, {"x": 1}, what="evaluation", redo=False, fix="FIX", complete=lambda d: True)
    assert reuse_unit(unit, {"x": 1}, what="evaluation", redo=True, fix="FIX", complete=lambda d: True) is False
    assert not (unit / "summary.json").exists()


def test_an_option_added_unset_keeps_a_unit_and_a_set_one_does_not(tmp_path):
    from omnishift.reuse import only_unset_added

    old = {"config": {"model": {"k": 5}, "objectives": [{"name": "ctc"}]}}
    u = tmp_path / "u"
    assert reuse_unit(u, old, what="unit", redo=False, fix="f", complete=lambda d: False) is False
    (u / "final").mkdir()
    grown = {"config": {"model": {"k": 5, "speech_options": None}, "objectives": [{"name": "ctc", "limit": None}]},
             "reading": None}
    assert only_unset_added(old, grown) and not only_unset_added(grown, old)
    assert reuse_unit(u, grown, what="unit", redo=False, fix="f", complete=lambda d: (d / "final").is_dir())
    assert json.loads((u / UNIT).read_text())["inputs"] == grown  # recorded anew
    set_one = {**grown, "reading": {"speech_input": "ctc_soft"}}
    assert not only_unset_added(grown, set_one)
    with pytest.raises(StaleUnitError, match="reading"):
        reuse_unit(u, set_one, what="unit", redo=False, fix="f", complete=lambda d: True)
    assert not only_unset_added({"a": [1, 2]}, {"a": [1]}) and not only_unset_added({"a": 1}, {"a": 2})


def test_a_model_copied_to_another_folder_keeps_its_identity(tmp_path, tiny_tokenizer):
    """The same weights loaded from another cache folder (another OMNISHIFT_HOME) are the same model;
    other weights are not."""
    import shutil

    import torch
    from tiny_models import make_tiny_encoder
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from omnishift.fingerprint import weights_sha256

    enc, _ = make_tiny_encoder()
    enc.save_pretrained(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    a, b = WhisperEncoder.from_pretrained(tmp_path / "a"), WhisperEncoder.from_pretrained(tmp_path / "b")
    assert a.config._name_or_path != b.config._name_or_path
    assert weights_sha256(a) == weights_sha256(b)
    with torch.no_grad():
        b.conv1.weight[0, 0, 0] += 1
    assert weights_sha256(a) != weights_sha256(b)
