"""Does the speech LLM listen? Response perplexity with each item's own clip vs another item's.

When a speech LLM answers every spoken question with the same text (S2T accuracy ~0, one distinct
answer), two explanations remain: the adaptor carries the speech content and the LLM cannot use
it, or the adaptor carries no content at all and has learned a fixed soft prompt that only sets the
answering style. The second predicts that swapping the clips between items leaves the response
perplexity unchanged; the first predicts that the item's own clip helps. Text input gives the
ceiling: how much knowing the instruction helps at all.
"""

from __future__ import annotations

import json
from pathlib import Path

from omnishift.importance.deactivate import perplexity
from omnishift.evaluate.reading_args import add_reading_args, reading_from_args
from omnishift.schema import positive_int


def listening_check(model, text_items: list[dict], speech_items: list[dict], batch_size: int = 4) -> dict:
    """Response perplexity from text, from the item's own clip, and from another item's clip.

    Args:
        model: a :class:`~omnishift.models.speech_llm.SpeechLLM`.
        text_items: processor items (prompt with the instruction as text, response).
        speech_items: the same items spoken (prompt with the placeholder, audio, response), in the
            same order; clip ``i + 1`` (cyclically) is given to item ``i`` for the mismatched pass.
        batch_size: items per forward.

    Returns:
        ``{"n", "ppl_text", "ppl_speech", "ppl_speech_mismatched", "gain_nats"}`` where
        ``gain_nats`` = ln(mismatched / own): the response information per token that the
        item's own speech carries (0: the model does not listen).
    """
    import math

    n = len(speech_items)
    if n < 2 or len(text_items) != n:
        raise ValueError(f"need the same >= 2 items as text and speech, got {len(text_items)} and {n}")
    mismatched = [{**it, "audio": speech_items[(i + 1) % n]["audio"]} for i, it in enumerate(speech_items)]
    own = perplexity(model, speech_items, batch_size)
    other = perplexity(model, mismatched, batch_size)
    return {"n": n, "ppl_text": perplexity(model, text_items, batch_size), "ppl_speech": own,
            "ppl_speech_mismatched": other, "gain_nats": math.log(other / own)}


def cmd_listening(args) -> int:
    """``omnishift eval listening MODEL --data SPEC``: the check above, as JSON."""
    from omnishift.data.items import build_items
    from omnishift.models.speech_llm import load_speech_llm
    from omnishift.paths import atomic_write_text

    if args.out:
        from omnishift.paths import ensure_writable_dir

        ensure_writable_dir(Path(args.out).parent, "--out's folder")
    model = load_speech_llm(None if args.model == "base" else args.model, reading=reading_from_args(args))
    text, _ = build_items(args.data, "text", limit=args.limit, audio_dir=args.audio_dir,
                          max_response_tokens=args.max_response_tokens, tokenizer=model.tokenizer)
    speech, _ = build_items(args.data, "speech", limit=args.limit, audio_dir=args.audio_dir,
                            max_response_tokens=args.max_response_tokens, tokenizer=model.tokenizer)
    result = {"model": args.model, "data": args.data, "speech_input": model.config.speech_input,
              "ctc_decoding": model.config.ctc_decoding,
              **listening_check(model, text, speech, args.batch_size)}
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("listening", help="does a speech LLM use the speech? response PPL with the item's own "
                                              "clip vs another item's clip (and from text)")
    s.add_argument("model", help="'base' or a speech-LLM folder")
    s.add_argument("--data", required=True, help="prompt/response source with audio, e.g. a training manifest")
    s.add_argument("--limit", type=positive_int, default=64)
    s.add_argument("--audio-dir", help="where missing speech is synthesized")
    s.add_argument("--max-response-tokens", type=positive_int, default=64)
    s.add_argument("--batch-size", type=positive_int, default=4)
    add_reading_args(s)
    s.add_argument("--out", help="also write the JSON here")
    s.set_defaults(func=cmd_listening)
