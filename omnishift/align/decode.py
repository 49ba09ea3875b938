"""Decode a run's clips once, in parallel, into the CTC token cache (``ctc_top1`` with beam search).

Why: beam search with the LLM as language model costs 2-3 s a clip on one core. Stage 1 and every
evaluation read the same transcripts (the front end is the aligned one, :meth:`SpeechLLM.prior_llm`),
but parallel training shards would each decode the same clips at the same moment. Decoding them
once up front, in ``workers`` single-threaded processes, turns every later read into a cache hit.

Clips are read the way their readers read them, so the keys match: training and benchmark clips
through the encoder feature cache (:class:`EncoderFeatureCache`), held-out clips (the listening
check) from raw audio, one clip at a time.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch

from omnishift.align.pool import spawn_pool

_W: dict = {}


def _init_worker(model_dir: str, feature_cache: str, threads: int | None) -> None:
    from omnishift.models.feature_cache import EncoderFeatureCache
    from omnishift.models.speech_llm import SpeechLLM

    if threads:
        torch.set_num_threads(threads)
    model = SpeechLLM.from_pretrained(model_dir)
    model.use_token_cache(Path(feature_cache) / "ctc_tokens")
    _W.update(model=model, features=EncoderFeatureCache(feature_cache, model))


def _decode(task: tuple[str, list[str]]) -> tuple[int, int]:
    """Decode one batch of clips (``("cached" | "raw", paths)``) in a worker; returns (hits, misses)."""
    from omnishift.data.audio import load_audio
    from omnishift.models.processor import load_states

    how, paths = task
    model = _W["model"]
    before = (model.token_cache.hits, model.token_cache.misses)
    audios = [load_audio(p) for p in paths]
    if how == "cached":
        model.clip_tokens([load_states(f) for f in _W["features"].states(audios)])
    else:
        for a in audios:
            model.speech_plan(a)  # the reading's tokens, through the cache
    return model.token_cache.hits - before[0], model.token_cache.misses - before[1]


@contextmanager
def _pool(workers: int, model_dir: Path, feature_cache: Path):
    if workers <= 1:  # this process (tests, one core)
        _init_worker(str(model_dir), str(feature_cache), None)
        yield map
        return
    with spawn_pool(workers, _init_worker, (str(model_dir), str(feature_cache), 1)) as pmap:
        yield pmap


def decode_clips(model_dir: str | Path, feature_cache: str | Path, cached: list[Path], raw: list[Path] = (),
                 raw_limit: int | None = None, workers: int = 2, batch: int = 8, progress: bool = False) -> dict:
    """Beam-decode every clip of the given manifests into ``feature_cache/ctc_tokens``.

    Args:
        model_dir: a speech-LLM folder with ``speech_input: ctc_top1`` and ``ctc_decoding``.
        feature_cache: the encoder feature cache the readers use (``data.feature_cache`` /
            ``evaluate.feature_cache``).
        cached: manifests whose clips are read through the feature cache (training, benchmarks).
        raw: manifests whose clips are read from raw audio (the listening check's held-out set),
            the first ``raw_limit`` rows of each (None: all).
        workers: single-threaded processes (<= 1: this process).

    Returns:
        ``{"clips", "cached_before", "decoded"}``.
    """
    from tqdm.auto import tqdm

    from omnishift.data.manifest import read_manifest

    def clips(manifests, limit=None):
        return list(dict.fromkeys(str(e.audio) for m in manifests for e in read_manifest(m)[:limit] if e.audio))

    tasks = []
    for how, manifests, limit in (("cached", cached, None), ("raw", raw, raw_limit)):
        paths = clips(manifests, limit)
        tasks += [(how, paths[s:s + batch]) for s in range(0, len(paths), batch)]
    hits = misses = 0
    with _pool(workers, Path(model_dir), Path(feature_cache)) as run, \
            tqdm(total=sum(len(p) for _, p in tasks), desc="decode clips", disable=not progress) as bar:
        for h, m in run(_decode, tasks):
            hits, misses = hits + h, misses + m
            bar.update(h + m)
    return {"clips": hits + misses, "cached_before": hits, "decoded": misses}
