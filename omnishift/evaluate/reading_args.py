"""Command-line flags that read a model folder's speech another way than it says.

A folder written by ``omnishift align`` or ``omnishift train`` carries how its speech is read
(``speech_input``, ``speech_options``, ``ctc_decoding``), so commands need no flags to use it as
validated. These flags exist for comparisons: the same weights read as token rows or as
posterior-weighted vectors, greedily or by beam search. Shared by ``eval``, ``eval-listening``,
``eval-ctc`` and ``eval-aligned`` so each flag is spelled and checked once.
"""

from __future__ import annotations

import argparse

from omnishift.models.ctc_decode import BeamSettings
from omnishift.models.speech_inputs import SPEECH_INPUTS


def _option(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: give KEY=VALUE, e.g. temperature=0.5")
    try:
        return key, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the value must be a number") from None


def add_reading_args(parser, speech_input: bool = True) -> None:
    """``--speech-input``, ``--speech-option KEY=VALUE`` and ``--ctc-beam/--ctc-lm-weight/
    --ctc-length-bonus/--ctc-eos-weight`` (``speech_input=False``: the CTC flags only)."""
    if speech_input:
        parser.add_argument("--speech-input", choices=list(SPEECH_INPUTS),
                            help="read the speech another way than the model folder says (CTC-head models)")
        parser.add_argument("--speech-option", action="append", type=_option, metavar="KEY=VALUE",
                            help="a setting of that reading, e.g. temperature=0.5 for ctc_soft (repeatable)")
    parser.add_argument("--ctc-beam", type=int, metavar="N",
                        help="read the CTC path with prefix beam search of width N and the base LLM as language "
                             "model; 0: greedy (default: as the model folder says)")
    parser.add_argument("--ctc-lm-weight", type=float, default=BeamSettings.lm_weight, metavar="W",
                        help="with --ctc-beam: weight of the LLM's log-probability (0: no LM)")
    parser.add_argument("--ctc-length-bonus", type=float, default=BeamSettings.length_bonus, metavar="B",
                        help="with --ctc-beam: score added per token")
    parser.add_argument("--ctc-eos-weight", type=float, default=BeamSettings.eos_weight, metavar="E",
                        help="with --ctc-beam: weight of the LLM's log-probability that the question ends where "
                             "the hypothesis does (0: off)")


def reading_from_args(args) -> dict:
    """The reading overrides the flags ask for (``SpeechLLM.from_pretrained(reading=...)``); empty:
    as the folder says. Beam settings are range-checked now, before any model is loaded."""
    out = {}
    if getattr(args, "speech_input", None):
        out["speech_input"] = args.speech_input
    if getattr(args, "speech_option", None):
        out["speech_options"] = dict(args.speech_option)
    if getattr(args, "ctc_beam", None) is not None:
        if args.ctc_beam < 0:
            raise ValueError(f"--ctc-beam {args.ctc_beam}: give a width >= 1, or 0 for greedy reading")
        d = {"beam": args.ctc_beam, "lm_weight": args.ctc_lm_weight, "length_bonus": args.ctc_length_bonus,
             "eos_weight": args.ctc_eos_weight}
        if args.ctc_beam:
            BeamSettings(**d)
        out["ctc_decoding"] = d if args.ctc_beam else None
    return out
