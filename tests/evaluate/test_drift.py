"""Drift from the base model: KL and ΔNLL of the base's own answers, the flip rate, their intervals."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_models import make_tiny_speech_llm

from omnishift.evaluate.drift import drift, flips, greedy_answers, summarize, teacher_forced
from omnishift.evaluate.scoring import normalize

PROMPTS = ["what is two plus two?", "name a colour", "where is paris?", "say something"]


def _moved(base, scale: float, seed: int = 1):
    """A copy of ``base`` whose LLM weights moved by ``scale`` times Gaussian noise."""
    m = copy.deepcopy(base)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.llm.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return m


def _by_hand(model, base, prompt: str, answer: str) -> tuple[float, float]:
    """KL(base || model) and NLL difference per answer token, from the LLMs' logits on the chat ids."""
    batch = base.processor([{"prompt": prompt, "response": answer}])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    where = [t for t in range(len(ids) - 1) if labels[t + 1] != -100]
    with torch.no_grad():
        lb = base.llm(input_ids=ids[None]).logits[0].float().log_softmax(-1)
        lm = model.llm(input_ids=ids[None]).logits[0].float().log_softmax(-1)
    kl = [float(torch.nn.functional.kl_div(lm[t], lb[t], log_target=True, reduction="sum")) for t in where]
    dnll = [float(lb[t, ids[t + 1]] - lm[t, ids[t + 1]]) for t in where]
    return sum(kl) / len(kl), sum(dnll) / len(dnll)


def test_the_base_against_itself_has_no_drift(tiny_tokenizer):
    base = make_tiny_speech_llm(tiny_tokenizer)
    answers = greedy_answers(base, PROMPTS, max_new_tokens=6)
    summary, per_item = drift(base, base, PROMPTS, answers, max_new_tokens=6, batch_size=3)
    assert summary["kl"] == pytest.approx(0.0, abs=1e-6) and summary["dnll"] == pytest.approx(0.0, abs=1e-6)
    assert summary["flip"] == 0.0 and summary["n"] == len(PROMPTS)


def test_kl_and_dnll_match_a_hand_computation_and_grow_with_the_change(tiny_tokenizer):
    base = make_tiny_speech_llm(tiny_tokenizer)
    answers = ["four", "a deep blue", "in france, on the seine", "hello there"]
    near, far = _moved(base, 0.01), _moved(base, 0.1)
    got = teacher_forced(near, base, PROMPTS, answers, batch_size=3)  # batches of 3 and 1: padding must not leak
    for r, p, a in zip(got, PROMPTS, answers):
        kl, dnll = _by_hand(near, base, p, a)
        assert r["kl"] == pytest.approx(kl, rel=1e-3, abs=1e-6) and r["dnll"] == pytest.approx(dnll, rel=1e-3, abs=1e-6)
        assert r["kl"] > 0
    far_kl = summarize(teacher_forced(far, base, PROMPTS, answers))["kl"]
    assert far_kl > summarize(got)["kl"]


def test_references_score_the_model_answers_as_t2t_and_bring_flips(tiny_tokenizer):
    base = make_tiny_speech_llm(tiny_tokenizer)
    model = _moved(base, 0.5)
    answers = greedy_answers(model, PROMPTS, max_new_tokens=6)
    refs = [["zzz unlikely"], ["qqq"], ["www"], ["vvv"]]
    refs[0] = [answers[0]]  # right, unless the answer has no words at all
    summary, per_item = drift(model, base, PROMPTS, greedy_answers(base, PROMPTS, 6), flip=False, max_new_tokens=6,
                              references=refs)
    assert [r["answer"] for r in per_item] == answers and all("flip" in r for r in per_item)
    assert [r["correct"] for r in per_item] == [float(bool(normalize(answers[0]))), 0.0, 0.0, 0.0]
    assert summary["correct"] == pytest.approx(sum(r["correct"] for r in per_item) / 4)
    _, no_refs = drift(model, base, PROMPTS, greedy_answers(base, PROMPTS, 6), flip=False, max_new_tokens=6)
    assert all("answer" not in r and "correct" not in r for r in no_refs)  # teacher-forced only: nothing generated
    with pytest.raises(ValueError, match="4 prompts but 1 reference lists"):
        drift(model, base, PROMPTS, answers, references=[["x"]])


def test_flips_compare_normalised_answers():
    assert flips(["Paris.", "the Moon", "4", "5"], ["paris", "moon", "four", "four"]) == [0.0, 1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="2 model answers but 1"):
        flips(["a", "b"], ["a"])


def test_summary_gives_intervals_and_counts_empty_answers():
    per_item = [{"tokens": 3, "kl": 0.1, "dnll": 0.2, "flip": 1.0}, {"tokens": 2, "kl": 0.3, "dnll": -0.1, "flip": 0.0},
                {"tokens": 0}]
    s = summarize(per_item)
    assert s["kl"] == pytest.approx(0.2) and s["dnll"] == pytest.approx(0.05) and s["flip"] == 0.5
    assert s["kl_ci95"][0] <= s["kl"] <= s["kl_ci95"][1] and s["skipped_empty_answers"] == 1
    with pytest.raises(ValueError, match="3 prompts but 2 answers"):
        teacher_forced(None, None, ["a", "b", "c"], ["x", "y"])


def test_base_answers_are_computed_once_and_refused_for_another_setting(tiny_tokenizer, tmp_path):
    from omnishift.evaluate.drift import base_answers_unit
    from omnishift.reuse import StaleUnitError

    base = make_tiny_speech_llm(tiny_tokenizer)
    first = base_answers_unit(base, PROMPTS, tmp_path / "b", max_new_tokens=4)
    stamp = (tmp_path / "b" / "answers.jsonl").stat().st_mtime_ns
    assert base_answers_unit(base, PROMPTS, tmp_path / "b", max_new_tokens=4) == first == greedy_answers(base, PROMPTS, 4)
    assert (tmp_path / "b" / "answers.jsonl").stat().st_mtime_ns == stamp  # reused, not regenerated
    with pytest.raises(StaleUnitError, match="max_new_tokens"):
        base_answers_unit(base, PROMPTS, tmp_path / "b", max_new_tokens=5)
    with pytest.raises(StaleUnitError, match="base"):
        base_answers_unit(_moved(base, 0.1), PROMPTS, tmp_path / "b", max_new_tokens=4)


@pytest.mark.integration
def test_cli_drift_of_the_base_model_from_itself_is_zero(tmp_path, capsys):
    import json

    from omnishift.cli import main

    argv = ["eval", "drift", "base", "--benchmark", "llama_questions", "--limit", "4", "--max-new-tokens", "8",
            "--out", str(tmp_path / "d")]
    assert main(argv) == 0
    s = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert s["n"] == 4 and s["kl"] == pytest.approx(0, abs=1e-6) and s["flip"] == 0.0
    assert main(["eval", "drift", "base", "--out", str(tmp_path / "e")]) == 2  # neither --data nor --benchmark
    assert "exactly one of --data" in capsys.readouterr().err


def test_a_probe_point_gives_its_answers_only_to_the_same_llm_prompts_and_length(tiny_tokenizer, tmp_path):
    from omnishift.evaluate.drift import DriftProbe, ProbeSet, probe_answers
    from omnishift.evaluate.qa import EvalSettings, evaluate

    base = make_tiny_speech_llm(tiny_tokenizer, seed=0).eval()
    model = _moved(base, 0.05)
    refs = [["four"], ["red"], ["france"], ["hello"]]
    sets = [ProbeSet("qa", PROMPTS, greedy_answers(base, PROMPTS, 4), references=refs, max_new_tokens=4)]
    point = DriftProbe(base, sets, every=1)(model, 3)
    answers = probe_answers(point, "qa", model.llm, PROMPTS, 4)
    assert answers == greedy_answers(model, PROMPTS, 4)
    assert probe_answers(point, "qa", base.llm, PROMPTS, 4) is None  # another LLM's
    assert probe_answers(point, "qa", model.llm, PROMPTS[::-1], 4) is None  # other prompts
    assert probe_answers(point, "qa", model.llm, PROMPTS, 5) is None  # another answer length
    assert probe_answers(point, "other", model.llm, PROMPTS, 4) is None

    items = [{"id": str(i), "question": p, "prompt": p, "references": r} for i, (p, r) in enumerate(zip(PROMPTS, refs))]
    settings = EvalSettings(batch_size=2, max_new_tokens=4, progress=False)
    given = evaluate(model, items, tmp_path / "given", settings, answers=dict(zip(PROMPTS, answers)))
    generated = evaluate(model, items, tmp_path / "generated", settings)
    assert given["correct"] == generated["correct"] == point["sets"]["qa"]["correct"] * len(PROMPTS)
    assert (tmp_path / "given" / "items.jsonl").read_text() == (tmp_path / "generated" / "items.jsonl").read_text()
    with pytest.raises(ValueError, match="no given answer"):
        evaluate(model, items, tmp_path / "partial", settings, answers={PROMPTS[0]: answers[0]})
