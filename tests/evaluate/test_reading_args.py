"""The flags that read a model folder another way: validated settings, greedy by 0, bad input refused."""

from __future__ import annotations

import argparse

import pytest

from omnishift.evaluate.reading_args import add_reading_args, reading_from_args


def _parse(*argv):
    p = argparse.ArgumentParser()
    add_reading_args(p)
    return p.parse_args(list(argv))


def test_no_flags_read_as_the_folder_says():
    assert reading_from_args(_parse()) == {}


def test_beam_flags_give_the_validated_settings():
    # the defaults are the validated settings, end-of-turn term included
    assert reading_from_args(_parse("--ctc-beam", "8")) == {
        "ctc_decoding": {"beam": 8, "lm_weight": 0.5, "length_bonus": 3.0, "eos_weight": 0.5}}
    assert reading_from_args(_parse("--ctc-beam", "4", "--ctc-eos-weight", "0"))["ctc_decoding"]["eos_weight"] == 0.0
    with pytest.raises(ValueError, match="eos_weight"):
        reading_from_args(_parse("--ctc-beam", "4", "--ctc-eos-weight", "-1"))
    with pytest.raises(ValueError, match="--ctc-beam -2"):
        reading_from_args(_parse("--ctc-beam", "-2"))


def test_beam_zero_is_greedy_and_a_reading_takes_options():
    got = reading_from_args(_parse("--ctc-beam", "0", "--speech-input", "ctc_soft", "--speech-option",
                                   "temperature=0.5"))
    assert got == {"ctc_decoding": None, "speech_input": "ctc_soft", "speech_options": {"temperature": 0.5}}


@pytest.mark.parametrize("bad", ["temperature", "=0.5", "temperature=warm"])
def test_a_malformed_option_is_named(bad, capsys):
    with pytest.raises(SystemExit):
        _parse("--speech-option", bad)
    assert bad in capsys.readouterr().err


def test_an_override_reads_the_same_weights_another_way(tmp_path, tiny_tokenizer):
    from tiny_models import save_tiny_parts

    from omnishift.models.speech_llm import SpeechLLM

    cfg = save_tiny_parts(tmp_path / "parts", tiny_tokenizer, ctc_head=True, speech_input="ctc_top1",
                          ctc_decoding={"beam": 2})
    SpeechLLM.from_config(cfg).save_pretrained(tmp_path / "m", llm_is_base=True)
    soft = SpeechLLM.from_pretrained(tmp_path / "m", reading={"speech_input": "ctc_soft", "ctc_decoding": None,
                                                              "speech_options": {"temperature": 0.5}})
    assert soft.config.speech_input == "ctc_soft" and soft.beam_settings is None
    assert soft.speech_options.temperature == 0.5
    with pytest.raises(ValueError, match="picks tokens"):  # the folder's beam cannot read frames
        SpeechLLM.from_pretrained(tmp_path / "m", reading={"speech_input": "ctc_soft"})
    with pytest.raises(ValueError, match="unknown"):
        SpeechLLM.from_pretrained(tmp_path / "m", reading={"k": 3})
