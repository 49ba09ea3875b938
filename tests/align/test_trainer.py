"""``omnishift align`` on a tiny encoder/LLM pair: the CTC loss falls, resume is bit-exact, and
the saved folder is a speech LLM the rest of the toolkit loads."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import make_tiny_speech_llm, save_tiny_parts, tone

from omnishift.align.config import AlignConfig, load_align_config
from omnishift.align.dataset import load_alignment_set, write_alignment_set
from omnishift.align.trainer import align, order_position
from omnishift.models.feature_cache import encoder_identity
from omnishift.models.speech_llm import SpeechLLM

WORDS = ["hi", "yes", "no", "sun", "red", "one", "two", "cat", "dog", "sky", "sea", "up"]


def _model(tok):
    return make_tiny_speech_llm(tok, adaptor_norm=True, ctc_head=True, frame_policy="clip")


def _set(tmp_path, model, n=12):
    audios = [tone(0.8 + 0.1 * (i % 4), freq=150 + 40 * i, seed=i) for i in range(n)]
    states = model.encode_audio(audios)
    fp = model.processor.frame_policy
    policy = {"policy": fp.policy, "k": fp.k, "margin_s": fp.margin_s, "max_frames": fp.max_frames}
    records = [{"id": f"c{i}", "text": WORDS[i % len(WORDS)]} for i in range(n)]
    return write_alignment_set(tmp_path / "set", records, states, encoder="tiny",
                               encoder_identity=encoder_identity(model.encoder), policy=policy, shard_size=5)


def _config(tmp_path, set_dir, name="run", **loop):
    return load_align_config(None, [f"data.set={set_dir}", "data.heldout=2", f"out_dir={tmp_path / name}",
                                    "objectives=[{name: ctc, batch_size: 4}]", "optim.lr=1e-2", "loop.log_every=1",
                                    "loop.progress=false", "loop.eval_every=0", "checkpoint.save_every=2",
                                    *[f"loop.{k}={v}" for k, v in loop.items()]])


def test_set_round_trip(tmp_path, tiny_tokenizer):
    m = _model(tiny_tokenizer)
    meta, items = load_alignment_set(_set(tmp_path, m))
    assert len(items) == 12 and meta["policy"]["policy"] == "clip"
    torch.testing.assert_close(items[3]["encoder_states"].float(), m.encode_audio([tone(1.1, freq=270, seed=3)])[0],
                               rtol=0, atol=2e-3)  # stored as fp16


def test_ctc_loss_falls_on_synthesized_speech_and_final_folder_loads(tmp_path, tiny_tokenizer):
    """The issue's acceptance test: a tiny random encoder/LLM pair aligned on a handful of eSpeak NG
    clips (built by the real alignment-set builder); the CTC loss falls."""
    from omnishift.align.dataset import build_alignment_set

    cfg = save_tiny_parts(tmp_path / "parts", tiny_tokenizer, adaptor_norm=True, ctc_head=True, frame_policy="clip",
                          k=1)  # byte-level tiny tokenizer: one CTC label per character, so one embedding per frame
    m = SpeechLLM.from_config(cfg)
    texts = [(f"t{i}", w) for i, w in enumerate(["Hi there.", "Yes, please.", "No way.", "Red sun.", "Blue sky.",
                                                 "One, two.", "Cat and dog.", "Up and down."])]
    set_dir = tmp_path / "set"
    build_alignment_set(set_dir, 10, encoder=cfg.encoder, policy={"policy": "clip", "k": 1}, workers=1,
                        shard_size=5, texts=texts, progress=False)
    final = align(_config(tmp_path, set_dir, max_steps=60), model=m)
    log = [json.loads(ln) for ln in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    first, last = log[0]["loss_ctc"], log[-1]["loss_ctc"]
    assert last < 0.5 * first, (first, last)
    assert "dev_wer" in log[-1]
    meta = json.loads((final / "omnishift_config.json").read_text())
    assert meta["llm_format"] == "base" and not (final / "llm").exists()  # the LLM is untouched: no copy
    loaded = SpeechLLM.from_pretrained(final)
    torch.testing.assert_close(loaded.llm.get_input_embeddings().weight, m.llm.get_input_embeddings().weight)


def test_resume_after_a_kill_is_bit_exact(tmp_path, tiny_tokenizer):
    set_dir = _set(tmp_path, _model(tiny_tokenizer))
    ref = align(_config(tmp_path, set_dir, "ref", max_steps=6), model=_model(tiny_tokenizer))

    class Kill(Exception):
        pass

    def kill(rec):
        if rec["step"] == 5:
            raise Kill

    cfg = _config(tmp_path, set_dir, "killed", max_steps=6)
    with pytest.raises(Kill):
        align(cfg, model=_model(tiny_tokenizer), on_step=kill)
    with pytest.raises(FileExistsError, match="--resume"):
        align(cfg, model=_model(tiny_tokenizer))
    got = align(cfg, model=_model(tiny_tokenizer), resume=True)
    from safetensors.torch import load_file

    a, b = load_file(ref / "adaptor.safetensors"), load_file(got / "adaptor.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "killed" / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # the killed run's records past its checkpoint were dropped


def test_dev_evaluation_does_not_change_what_is_trained(tmp_path, tiny_tokenizer):
    """A run that evaluates on its dev clips every step ends with the same adaptor, bit for bit, as
    one that evaluates only at the end (the dev pass draws no random numbers and leaves the adaptor
    in training mode), so ``loop.eval_every`` is a monitoring choice: it may change on resume, and the
    recipe's wall time can be quoted without its dev passes. Training draws random numbers here (time
    masks, dropout, sampled negatives), so a dev pass that drew any would shift them."""
    from safetensors.torch import load_file

    set_dir = _set(tmp_path, _model(tiny_tokenizer))

    def config(name, eval_every):
        cfg = _config(tmp_path, set_dir, name, max_steps=4, eval_every=eval_every)
        cfg.objectives[0]["options"] = {"time_mask": 0.2, "feature_dropout": 0.1, "negatives": 8}
        return cfg

    quiet = align(config("quiet", 0), model=_model(tiny_tokenizer))
    busy = align(config("busy", 1), model=_model(tiny_tokenizer))
    a, b = load_file(quiet / "adaptor.safetensors"), load_file(busy / "adaptor.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    logged = [json.loads(ln) for ln in (tmp_path / "busy" / "log.jsonl").read_text().splitlines()]
    assert sum("dev_wer" in r for r in logged) == 4  # it did evaluate every step

    def kill(rec):
        if rec["step"] == 2:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        align(config("switch", 1), model=_model(tiny_tokenizer), on_step=kill)
    got = align(config("switch", 0), model=_model(tiny_tokenizer), resume=True)  # resumed under another eval_every
    c = load_file(got / "adaptor.safetensors")
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_set_encoded_with_another_policy_is_refused(tmp_path, tiny_tokenizer):
    set_dir = _set(tmp_path, _model(tiny_tokenizer))
    trim = make_tiny_speech_llm(tiny_tokenizer, adaptor_norm=True, ctc_head=True, frame_policy="trim")
    with pytest.raises(ValueError, match="frame policy"):
        align(_config(tmp_path, set_dir, max_steps=2), model=trim)


def test_two_sets_train_together_and_each_keeps_its_own_dev_clips(tmp_path, tiny_tokenizer):
    from omnishift.align.trainer import load_sets

    m = _model(tiny_tokenizer)
    a = _set(tmp_path / "a", m, n=8)
    b = _set(tmp_path / "b", m, n=6)
    cfg = load_align_config(None, [f"data.set=[{a}, {b}]", "data.heldout=2", f"out_dir={tmp_path / 'run'}"])
    train, dev, dropped = load_sets(m, cfg)
    assert dropped == 0 and len(train) == 6 + 4
    assert [it["id"] for it in dev] == ["c6", "c7", "c4", "c5"]  # the last two of each set
    one = load_sets(m, _config(tmp_path, a))  # a single set as before
    assert [it["id"] for it in one[1]] == ["c6", "c7"] and len(one[0]) == 6
    with pytest.raises(ValueError, match="usable clips"):
        load_sets(m, load_align_config(None, [f"data.set=[{a}, {b}]", "data.heldout=7"]))


def test_order_walks_permutations_without_repeats_within_an_epoch():
    seen = [i for s in range(3) for i in order_position(s, 4, 12, seed=0, stream=0)]
    assert sorted(seen) == list(range(12))
    assert order_position(3, 4, 12, 0, 0) != order_position(0, 4, 12, 0, 0)  # next epoch: new order


def test_config_rejects_unknown_objectives_and_keys():
    from omnishift.train.config import ConfigError

    with pytest.raises(ConfigError, match="unknown"):
        load_align_config(None, ["objectives=[{name: mse}]"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_align_config(None, ["objectives=[{name: ctc, options: {blank_bias: 1}}]"])
    assert isinstance(load_align_config(None), AlignConfig)


def test_aligned_adaptor_transcribes(tmp_path, tiny_tokenizer):
    cfg = save_tiny_parts(tmp_path / "parts", tiny_tokenizer, adaptor_norm=True, ctc_head=True, frame_policy="clip")
    m = SpeechLLM.from_config(cfg)  # base models on disk, so the aligned folder can name them
    final = align(_config(tmp_path, _set(tmp_path, m), max_steps=2), model=m)
    loaded = SpeechLLM.from_pretrained(final)
    assert loaded.config.ctc_head and loaded.config.frame_policy == "clip"
    out = loaded.ctc_transcripts(loaded.encode_audio([tone(1.0)]))
    assert len(out) == 1 and isinstance(out[0], str)


def test_ctc_compressed_input_fills_one_slot_per_heard_token(tmp_path, tiny_tokenizer):
    """LegoSLM input: the greedy CTC path's non-blank, de-duplicated tokens, as the LLM's own rows."""
    from omnishift.models.processor import s2t_prompt

    m = make_tiny_speech_llm(tiny_tokenizer, adaptor_norm=True, ctc_head=True, frame_policy="clip",
                             speech_input="ctc_top1")
    with torch.no_grad():
        m.adaptor.ctc_blank.zero_()
        m.adaptor.ctc_blank[-1] = -1e4  # blank never wins: every run of equal tokens is one slot
    audio = tone(1.0)
    states = m.encode_audio([audio])[0]
    emb = m.speech_vectors(audio)
    from omnishift.models.adaptor import ctc_logits

    with torch.no_grad():
        table = m.llm.get_input_embeddings().weight
        best = ctc_logits(m.adaptor(states[None])[0], table, m.adaptor.ctc_blank,
                          log_scale=m.adaptor.ctc_log_scale).argmax(-1)  # T'
    runs = torch.unique_consecutive(best)  # no blank can win: one slot per run
    assert emb.shape[0] == len(runs) <= states.shape[0] // m.config.k
    torch.testing.assert_close(emb, table[runs - 1], rtol=0, atol=0)
    assert m.ctc_transcripts([states])[0] == tiny_tokenizer.decode((runs - 1).tolist()).strip()
    batch = m.processor([{"prompt": s2t_prompt(), "audio": audio}], padding_side="left")
    assert int(batch["speech_mask"].sum()) == emb.shape[0] and "input_features" not in batch
    with torch.no_grad():
        out = m.generate(batch, max_new_tokens=3)
    assert len(out) == 1
    soft = make_tiny_speech_llm(tiny_tokenizer, ctc_head=True, frame_policy="clip", speech_input="ctc_soft")
    assert soft.speech_vectors(audio).shape[1] == m.llm.get_input_embeddings().weight.shape[1]
    with pytest.raises(ValueError, match="CTC head"):
        make_tiny_speech_llm(tiny_tokenizer, speech_input="ctc_top1")


def test_ctc_plus_kd_caches_teacher_targets_once(tmp_path, tiny_tokenizer):
    m = _model(tiny_tokenizer)
    set_dir = _set(tmp_path, m)
    objectives = ("objectives=[{name: ctc, batch_size: 4}, {name: kd, weight: 0.5, batch_size: 2, limit: 4, "
                  "options: {max_response_tokens: 3, questions_only: false, top_k: 8}}]")
    cfg = load_align_config(None, [f"data.set={set_dir}", "data.heldout=2", f"out_dir={tmp_path / 'kd'}", objectives,
                                   "loop.progress=false", "loop.eval_every=0", "loop.log_every=1", "loop.max_steps=3",
                                   "checkpoint.save_every=1"])
    calls = []
    import omnishift.align.objectives as obj

    real = obj.OBJECTIVES["kd"]
    obj.OBJECTIVES["kd"] = real._replace(prepare=lambda *a: (calls.append(1), real.prepare(*a)))
    try:
        align(cfg, model=m)
        log = [json.loads(ln) for ln in (tmp_path / "kd" / "log.jsonl").read_text().splitlines()]
        assert all("loss_kd" in r and "loss_ctc" in r for r in log)
        assert len(list((tmp_path / "kd").glob("targets-kd-*.pt"))) == 1 and calls == [1]
        import shutil

        shutil.rmtree(tmp_path / "kd" / "final")  # a rerun (resume) reuses the cached teacher targets
        align(cfg, model=_model(tiny_tokenizer), resume=True)
        assert calls == [1]
    finally:
        obj.OBJECTIVES["kd"] = real


def test_resume_with_another_config_is_refused_but_a_moved_run_is_not(tmp_path, tiny_tokenizer):
    set_dir = _set(tmp_path, _model(tiny_tokenizer))
    align(_config(tmp_path, set_dir, "a", max_steps=2), model=_model(tiny_tokenizer))
    changed = _config(tmp_path, set_dir, "a", max_steps=2)
    changed.optim.lr = 5e-3
    with pytest.raises(ValueError, match=r"changed: \['optim.lr'\]"):
        align(changed, model=_model(tiny_tokenizer), resume=True)
    import shutil

    shutil.copytree(tmp_path / "a", tmp_path / "b")  # the same run in another folder (e.g. a pipeline's)
    assert align(_config(tmp_path, set_dir, "b", max_steps=2), model=_model(tiny_tokenizer), resume=True).is_dir()


def test_grown_context_layers_start_as_the_identity_then_train_and_reload(tmp_path, tiny_tokenizer):
    """grow_layers: the grown adaptor hears exactly what the saved one did at step 0; training moves
    the new layers (their zeroed output projections get gradients) and the final folder rebuilds them."""
    from omnishift.align.trainer import build_align_model

    m = SpeechLLM.from_config(save_tiny_parts(tmp_path / "parts", tiny_tokenizer, adaptor_norm=True, ctc_head=True,
                                              frame_policy="clip"))
    set_dir = _set(tmp_path, m)
    m.save_pretrained(tmp_path / "saved", llm_is_base=True)
    cfg = _config(tmp_path, set_dir, max_steps=6)
    cfg.model, cfg.grow_layers = str(tmp_path / "saved"), 2
    grown = build_align_model(cfg)
    assert grown.config.adaptor_layers == 2 and len(grown.adaptor.context.layers) == 2
    x, lengths = torch.randn(3, 20, m.encoder.config.d_model), torch.tensor([20, 13, 7])
    m.adaptor.eval(), grown.adaptor.eval()
    torch.testing.assert_close(grown.adaptor(x, lengths), m.adaptor(x, lengths), rtol=0, atol=0)
    a, b = grown.adaptor.context.layers  # distinct random inits, identical zeroed outputs
    assert not torch.equal(a.linear1.weight, b.linear1.weight) and not a.linear2.weight.any()

    final = align(cfg, model=grown)
    assert grown.adaptor.context.layers[0].linear2.weight.abs().sum() > 0  # moved off the identity
    loaded = SpeechLLM.from_pretrained(final)
    assert loaded.config.adaptor_layers == 2
    loaded.adaptor.eval(), grown.adaptor.eval()
    torch.testing.assert_close(loaded.adaptor(x, lengths), grown.adaptor(x, lengths))


def test_grow_layers_needs_a_saved_adaptor():
    from omnishift.train.config import ConfigError

    with pytest.raises(ConfigError, match="saved adaptor"):
        load_align_config(None, ["grow_layers=1"])
    with pytest.raises(ConfigError, match="grow_layers"):
        load_align_config(None, ["model=runs/x", "grow_layers=-1"])
    with pytest.raises(ValueError, match="n >= 1"):
        _model_adaptor_grow_zero()


def _model_adaptor_grow_zero():
    from omnishift.models.adaptor import FrameStackAdaptor

    FrameStackAdaptor(8, 16, k=2, hidden=8).grow_context(0)


def test_kd_through_the_soft_reading_trains_the_adaptor_and_leaves_the_llm(tmp_path, tiny_tokenizer):
    """Training through the frozen LLM: KD on ctc_soft moves the adaptor's MLP weights (the gradient
    reaches it through the posterior-weighted vectors), with the LLM in bfloat16 and untouched."""
    m = make_tiny_speech_llm(tiny_tokenizer, adaptor_norm=True, ctc_head=True, frame_policy="clip",
                             speech_input="ctc_soft")
    with torch.no_grad():  # the blank never wins: every clip has segments to read
        m.adaptor.ctc_blank.zero_()
        m.adaptor.ctc_blank[-1] = -1e4
    set_dir = _set(tmp_path, m)
    before = {k: v.clone() for k, v in m.adaptor.state_dict().items()}
    llm_before = {k: v.clone() for k, v in m.llm.state_dict().items()}
    cfg = load_align_config(None, [f"data.set={set_dir}", "data.heldout=2", f"out_dir={tmp_path / 'kd'}",
                                   "objectives=[{name: kd, batch_size: 2, limit: 4, options: {max_response_tokens: 3, "
                                   "questions_only: false, top_k: 8, bf16_llm: true}}]", "optim.lr=1e-2",
                                   "optim.weight_decay=0", "loop.progress=false", "loop.eval_every=0",
                                   "loop.max_steps=2", "checkpoint.save_every=0"])
    align(cfg, model=m)
    assert m.llm.dtype == torch.bfloat16
    for name in ("linear1.weight", "linear2.weight"):
        assert not torch.equal(m.adaptor.state_dict()[name], before[name]), name
    assert torch.equal(m.adaptor.ctc_blank, before["ctc_blank"])  # the soft reading scores tokens only
    assert all(torch.equal(v.float(), llm_before[k].float().to(torch.bfloat16).float())
               for k, v in m.llm.state_dict().items())
