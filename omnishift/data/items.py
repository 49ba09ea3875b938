"""Processor items from a data source: the one place prompts, responses and audio are paired.

Why here (and not in a command module): the trainer, the importance pass, the pipeline and the
listening test all need the same items; they import this, never a CLI module.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def build_items(spec: str, modality: str, *, limit: int | None = None, audio_dir: str | None = None,
                max_response_tokens: int | None = None, tokenizer=None, on_error: str = "raise",
                speakers=None) -> tuple[list[dict], dict]:
    """Processor items (prompt, response[, audio]) of a data source, for training, importance,
    perplexity and listening passes alike.

    Args:
        spec: a source spec (:func:`omnishift.data.sources.load_source`), e.g.
            ``instructions:alpaca_gpt4_llamafactory_demo1k``, a manifest path or ``hf:REPO:SPLIT``.
        modality: ``text`` (T2T prompt with the instruction) or ``speech`` (S2T prompt + audio;
            missing audio is synthesized into ``audio_dir``).
        limit: read at most this many examples.
        audio_dir: where synthesized / decoded audio goes (needed for ``hf:`` sources).
        max_response_tokens: cut responses to this many tokens of ``tokenizer``.
        on_error: ``raise`` on unreadable audio, or ``skip`` (counted in ``info["skipped"]``).
        speakers: who speaks missing audio: a :class:`~omnishift.data.voices.SpeakerMix` (None: one eSpeak voice).

    Returns:
        ``(items, info)`` where ``info`` counts what was loaded and skipped.
    """
    from omnishift.data.audio import load_audio
    from omnishift.data.manifest import SkipReport
    from omnishift.data.sources import load_source
    from omnishift.models.processor import s2t_prompt, t2t_prompt

    # hf: datasets decode their audio into WAVs, so they need a folder for it before anything else
    extra = {"audio_dir": Path(audio_dir) / "hf"} if spec.startswith("hf:") and audio_dir else {}
    if spec.startswith("hf:") and not audio_dir:
        raise ValueError(f"{spec}: an HF dataset's audio is decoded to WAV files: set the audio folder "
                         "(data.audio_dir for training, --audio-dir for importance)")
    loaded = load_source(spec, limit=limit, **extra)
    has_response = lambda e: bool(e.response and e.response.strip())  # noqa: E731  (whitespace is no answer)
    examples = [e for e in loaded if has_response(e)]
    no_response = [e.id for e in loaded if not has_response(e)]
    if not examples:
        raise ValueError(f"{spec}: none of its {len(loaded)} examples has a response; training, importance and "
                         "perplexity need prompt/response pairs (add a 'response' or 'output' field)")
    if no_response:
        log.warning("%s: %d of %d examples have no response and are skipped (e.g. %s)", spec, len(no_response),
                    len(loaded), ", ".join(no_response[:3]))
    if max_response_tokens and tokenizer is not None:
        for e in examples:
            ids = tokenizer(e.response, add_special_tokens=False)["input_ids"]
            if len(ids) > max_response_tokens:
                e.response = tokenizer.decode(ids[:max_response_tokens])
    report = SkipReport()
    if modality == "text":
        items = [{"prompt": t2t_prompt(e.text), "response": e.response} for e in examples]
    else:
        from omnishift.data.synth import SynthConfig, ensure_audio

        examples, _ = ensure_audio(examples, audio_dir, speakers or SynthConfig())
        items = []
        for e in examples:
            try:
                items.append({"prompt": s2t_prompt(), "audio": load_audio(e.audio, item=e.id), "response": e.response})
            except ValueError as err:
                if on_error != "skip":
                    raise
                report.add(e.id, str(err))
    return items, {"source": spec, "examples": len(examples), "items": len(items),
                   "skipped": report.count + len(no_response), "skipped_no_response": len(no_response),
                   "skipped_bad_audio": report.count}
