"""What an adaptor with a CTC head hears: its CTC transcript of each spoken question and the WER.

The transcript is read the way the model reads its CTC path (greedy, or beam search with the LLM
as language model when the folder sets ``ctc_decoding``), so the WER is that of the words the LLM
is handed under ``speech_input: ctc_top1``.
"""

from __future__ import annotations

import json
from pathlib import Path


def eval_ctc(model, examples, out_dir: str | Path, batch_size: int = 16, feature_cache: str | Path | None = None) -> dict:
    """CTC transcripts of the examples' audio (as the model reads its CTC path) and their corpus WER.

    Writes ``out_dir/items.jsonl`` (id, text, transcript, word errors) and ``summary.json``.

    Args:
        feature_cache: read encoder states from this :class:`EncoderFeatureCache` folder (the states
            S2T evaluation reads, so beam-decoded tokens cached there are reused).
    """
    from omnishift.data.audio import load_audio
    from omnishift.evaluate.wer import corpus_wer, word_errors
    from omnishift.models.processor import load_states
    from omnishift.paths import atomic_write_text

    out_dir = Path(out_dir)
    cache = None
    if feature_cache is not None:
        from omnishift.models.feature_cache import EncoderFeatureCache

        cache = EncoderFeatureCache(feature_cache, model)
    rows = []
    for s in range(0, len(examples), batch_size):
        chunk = examples[s:s + batch_size]
        audios = [load_audio(e.audio, item=e.id) for e in chunk]
        states = [load_states(p) for p in cache.states(audios)] if cache else model.encode_audio(audios)
        for e, hyp in zip(chunk, model.ctc_transcripts(states)):
            errors, words = word_errors(e.text, hyp)
            rows.append({"id": e.id, "text": e.text, "transcript": hyp, "errors": errors, "words": words})
    wer = corpus_wer([(r["text"], r["transcript"]) for r in rows])
    summary = {"n": len(rows), **wer, "frame_policy": model.config.frame_policy,
               "ctc_decoding": model.config.ctc_decoding}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "items.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
