"""The alignment set: many varied eSpeak NG clips of question/instruction texts, encoded once.

Adaptor alignment (:mod:`omnishift.align.trainer`) needs tens of thousands of (speech, transcript)
pairs and no LLM pass per clip for CTC, so the frozen encoder would dominate its cost if it ran
every epoch. :func:`build_alignment_set` therefore synthesizes each clip with a random English
voice, variant, rate, pitch and channel (:mod:`omnishift.data.augment`), encodes it once under the model's window
policy and stores the kept encoder states (fp16) in shards::

    OUT/meta.json               what produced the set (texts, seed, voices, augmentation, encoder
                                identity, window policy); a rebuild with other inputs is refused
    OUT/shards/NNNNN.jsonl      one record per clip: id, text, voice, rate, pitch, effects, frames
    OUT/shards/NNNNN.safetensors  states (sum of frames, C) fp16 + offsets (n + 1,)

A shard is written atomically (its safetensors file last), so an interrupted build resumes at the
first missing shard and gives the same bytes as an uninterrupted one: clip ``i`` depends only on
``(seed, i)``. Texts come from ``../shared/data`` (Web Questions *train* questions and the
instruction sets' self-contained instructions); anything matching a LLaMA Questions or Web Questions
test question is dropped, so no benchmark question is ever aligned on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load, save_file
from tqdm.auto import tqdm

from omnishift.data.augment import AugmentConfig
from omnishift.align.pool import spawn_pool
from omnishift.data.voices import engine_voices, speak_clip
from omnishift.models.encoder import SAMPLE_RATE
from omnishift.paths import atomic_write_text, shared_data_dir

log = logging.getLogger(__name__)
INSTRUCTION_FILES = ("alpaca_alpagasus_random9k", "alpaca_stanford_5000", "alpaca_gpt4_llamafactory_demo1k",
                     "dolly_alpagasus_3k", "dolly_first6400_nocontext")
MAX_SECONDS = 25.0


_ENGLISH = {"the", "a", "an", "is", "are", "what", "how", "of", "to", "in", "and", "you", "for", "who", "why",
            "which", "when", "where", "can", "do", "does", "did", "was", "me", "my", "i", "it", "on", "with"}


def _is_english(text: str) -> bool:
    """Plain ASCII with at least one English function word (drops the instruction sets' few
    French/Spanish/code rows, which eSpeak's English voices would mispronounce)."""
    return text.isascii() and bool(_ENGLISH & set(re.findall(r"[a-z]+", text.lower())))


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


def _sentences(text: str) -> list[str]:
    return [x.strip() for x in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if x.strip()]


TEXT_PARTS = ("questions", "responses")


def parse_text_parts(spec: str) -> tuple[str, ...]:
    """``"questions+responses"`` -> ``("questions", "responses")``, unknown parts named."""
    parts = tuple(p.strip() for p in spec.split("+") if p.strip())
    bad = [p for p in parts if p not in TEXT_PARTS]
    if bad or not parts:
        raise ValueError(f"texts {spec!r}: unknown part(s) {bad}; join any of {'/'.join(TEXT_PARTS)} with '+', "
                         "e.g. questions+responses")
    return parts


def alignment_texts(data_dir: str | Path | None = None, min_words: int = 3, max_words: int = 30,
                    responses: bool = False, parts: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
    """``(id, text)`` pairs to speak: Web Questions train questions + self-contained instructions
    (+ the instruction sets' response sentences with ``responses``).

    ``parts`` (any of :data:`TEXT_PARTS`) overrides ``responses``.

    Why responses: CTC over the LLM's vocabulary can only emit tokens it was aligned on, and the
    questions alone leave 4.0 % of LLaMA Questions' SmolLM2 tokens unseen and 12.2 % seen under 5
    times (mostly the content words a QA answer hinges on); adding the ~49k response sentences of
    the instruction sets (3-30 words) cuts that to 0.5 % and 3.5 % (measured).

    Benchmark questions (LLaMA Questions, Web Questions test) are excluded after normalisation, and
    duplicates are dropped. Web Questions are lowercase; their first letter is capitalised.
    """
    from omnishift.data.sources import load_instructions, load_llama_questions, load_web_questions

    parts = tuple(parts) if parts is not None else ("questions", "responses") if responses else ("questions",)
    unknown = sorted(set(parts) - set(TEXT_PARTS))
    if unknown or not parts:
        raise ValueError(f"alignment text parts {unknown or parts}: use a non-empty choice of {TEXT_PARTS}")
    data_dir = Path(data_dir or shared_data_dir())
    banned = {_norm(e.text) for e in load_llama_questions(data_dir)}
    banned |= {_norm(e.text) for e in load_web_questions("test", data_dir)}
    web_train = load_web_questions("train", data_dir)
    rows = [e for name in INSTRUCTION_FILES for e in load_instructions(name, data_dir, self_contained_only=False)]
    questions = [(e.id, e.text[:1].upper() + e.text[1:]) for e in web_train]
    for name in INSTRUCTION_FILES:
        questions += [(e.id, e.text) for e in load_instructions(name, data_dir)]
    responses = [(f"{e.id}/r{j}", x) for e in rows for j, x in enumerate(_sentences(e.response or ""))]
    kept = _dedup(questions + responses, banned, min_words, max_words)  # a response repeating a question goes
    response_ids = {i for i, _ in responses}
    return [(i, t) for i, t in kept if ("responses" if i in response_ids else "questions") in parts]


def _dedup(pairs: list[tuple[str, str]], banned: set, min_words: int, max_words: int) -> list[tuple[str, str]]:
    """Pairs with whitespace normalised, minus benchmark questions, repeats, odd lengths, non-English."""
    out, seen = [], set()
    for id_, text in pairs:
        text = " ".join(text.split())
        key = _norm(text)
        if (key in banned or key in seen or not min_words <= len(text.split()) <= max_words
                or not _is_english(text)):
            continue
        seen.add(key)
        out.append((id_, text))
    return out


# ---- worker process ------------------------------------------------------------------------------
_W: dict = {}


def _init_worker(encoder: str, policy: dict, threads: int | None) -> None:
    from omnishift.models.defaults import load_encoder
    from omnishift.models.processor import FramePolicy

    if threads:
        torch.set_num_threads(threads)
    enc, fe = load_encoder(encoder)
    _W.update(encoder=enc, fe=fe, policy=FramePolicy(**policy))


def _make_shard(task: tuple) -> tuple[int, list[dict], np.ndarray | None, list[tuple[str, str]]]:
    """Synthesize, augment and encode one shard's clips (runs in a worker)."""
    from omnishift.models.encoder import encode_clips

    shard, jobs, seed, voices, aug_dict = task
    aug = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in aug_dict.items()})
    records, audios, skipped = [], [], []
    for index, (id_, text) in jobs:
        try:
            audio, plan, effects = speak_clip(text, index, seed, voices, aug)
        except ValueError as e:
            skipped.append((f"{index}:{id_}", str(e)))
            continue
        if len(audio) > MAX_SECONDS * SAMPLE_RATE:
            skipped.append((f"{index}:{id_}", f"{len(audio) / SAMPLE_RATE:.1f} s > {MAX_SECONDS} s"))
            continue
        records.append({"id": f"a{index:07d}", "source_id": id_, "text": text, **plan, "effects": effects,
                        "seconds": round(len(audio) / SAMPLE_RATE, 3)})
        audios.append(audio)
    states = []
    for s in range(0, len(audios), 8):
        states += encode_clips(_W["encoder"], _W["fe"], _W["policy"], audios[s:s + 8])
    for r, st in zip(records, states):
        r["frames"] = int(st.shape[0])
    flat = torch.cat(states).half().numpy() if states else None
    return shard, records, flat, skipped


# ---- builder -------------------------------------------------------------------------------------
def _fingerprint(meta: dict) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]


def build_alignment_set(out: str | Path, n: int, *, encoder: str | None = None, policy: dict | None = None,
                        seed: int = 0, workers: int = 2, shard_size: int = 500, augment_cfg: AugmentConfig | None = None,
                        data_dir: str | Path | None = None, texts: list[tuple[str, str]] | None = None,
                        progress: bool = True, on_clips=None) -> dict:
    """Build (or resume) an alignment set of ``n`` clips in ``out`` (see the module docstring).

    Args:
        out: the set's folder.
        n: clips (texts are cycled with new voices when ``n`` exceeds their number).
        encoder: encoder name/folder (default: the default encoder).
        policy: :class:`~omnishift.models.processor.FramePolicy` fields (default ``clip``, k 5,
            margin 0.2 s); a model aligned on the set must use the same.
        seed: seeds the text order and every clip's voice and effects.
        workers: processes (each synthesizes and encodes with one thread); 0: this process.
        shard_size: clips per shard (the unit of resumption).
        augment_cfg: ranges of the random voice and channel choices.
        texts: ``(id, text)`` pairs to speak (default: :func:`alignment_texts` of ``data_dir``).
        on_clips: ``on_clips(done, n)`` after each shard (a recipe's progress bar).

    Returns:
        ``meta.json``'s content plus this call's ``clips_per_s``.

    Raises:
        FileExistsError: ``out`` holds a set built from other inputs (both fingerprints named).
    """
    from omnishift.models.defaults import DEFAULT_ENCODER

    if n < 1 or workers < 0 or shard_size < 1:
        raise ValueError(f"n and shard_size must be >= 1 and workers >= 0 (got {n}, {workers}, {shard_size})")
    from omnishift.paths import ensure_writable_dir

    out = ensure_writable_dir(out, "alignment set folder (--out)")
    encoder = encoder or DEFAULT_ENCODER
    policy = {"policy": "clip", "k": 5, "margin_s": 0.2, "max_frames": 1500, **(policy or {})}
    aug = augment_cfg or AugmentConfig()
    texts = texts if texts is not None else alignment_texts(data_dir)
    if not texts:
        raise ValueError("no texts to speak: the alignment set needs at least one (id, text) pair")
    voices = engine_voices(aug)
    meta = _set_meta(n, seed, shard_size, policy, aug, voices, encoder, texts)
    _check_same_set(out, meta)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2) + "\n")
    order = np.random.default_rng(seed).permutation(len(texts))
    n_shards = -(-n // shard_size)
    todo = [s for s in range(n_shards) if not _shard_done(out, s)]
    tasks = []
    for s in todo:
        idx = range(s * shard_size, min(n, (s + 1) * shard_size))
        tasks.append((s, [(i, texts[order[i % len(texts)]]) for i in idx], seed, voices, asdict(aug)))
    t0, made = time.perf_counter(), 0
    bar = tqdm(total=n, initial=n - sum(len(t[1]) for t in tasks), disable=not progress, desc="alignment set",
               unit="clip")
    with _shard_maker(workers, encoder, policy) as make:
        for shard, records, flat, skipped in make(_make_shard, tasks):
            _write_shard(out, shard, records, flat, skipped)
            made += len(records) + len(skipped)
            bar.update(len(records) + len(skipped))
            if on_clips is not None:
                on_clips(n - sum(len(t[1]) for t in tasks) + made, n)
    bar.close()
    seconds = time.perf_counter() - t0
    summary = {**meta, **set_stats(out), "clips_per_s_this_call": round(made / seconds, 2) if made else None}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _set_meta(n: int, seed: int, shard_size: int, policy: dict, aug: AugmentConfig, voices: dict, encoder: str,
              texts: list) -> dict:
    """What the set is made from (``meta.json``), with its fingerprint."""
    from omnishift.models.defaults import load_encoder
    from omnishift.models.feature_cache import encoder_identity

    espeak = voices.get("espeak", [])
    enc, _ = load_encoder(encoder)
    meta = {"n": n, "seed": seed, "shard_size": shard_size, "policy": policy, "augment": aug.to_dict(),
            "voices": [v for v in espeak if not v.startswith("+")], "variants": [v[1:] for v in espeak if v.startswith("+")],
            **({"other_voices": {k: v for k, v in voices.items() if k != "espeak"}} if set(voices) - {"espeak"} else {}),
            "encoder": encoder, "encoder_identity": encoder_identity(enc),
            "d_enc": enc.config.d_model,
            "texts_sha256": hashlib.sha256(json.dumps(texts).encode()).hexdigest(), "n_texts": len(texts)}
    meta["fingerprint"] = _fingerprint(meta)
    return meta


def _check_same_set(out: Path, meta: dict) -> None:
    """A folder holding a set made from other inputs is refused, naming what changed."""
    meta_file = out / "meta.json"
    if meta_file.is_file():
        old = json.loads(meta_file.read_text())
        if old.get("fingerprint") != meta["fingerprint"]:
            changed = sorted(k for k in meta if k != "fingerprint" and old.get(k) != meta[k])
            raise FileExistsError(f"{out} holds an alignment set built from other inputs (fingerprint "
                                  f"{old.get('fingerprint')} vs {meta['fingerprint']}; changed: {changed}); "
                                  "choose a new --out or delete the folder")


@contextmanager
def _shard_maker(workers: int, encoder: str, policy: dict):
    """``map``-like over shard tasks: a pool of ``workers`` spawned processes (one thread each), or
    this process itself for ``workers=0`` (debugging, engines registered at run time)."""
    if workers == 0:
        _init_worker(encoder, policy, None)
        yield map
        return
    with spawn_pool(workers, _init_worker, (encoder, policy, 1)) as pmap:
        yield pmap


def _shard_done(out: Path, shard: int) -> bool:
    return (out / "shards" / f"{shard:05d}.safetensors").is_file() and (out / "shards" / f"{shard:05d}.jsonl").is_file()


def _write_shard(out: Path, shard: int, records: list[dict], flat: np.ndarray | None, skipped: list) -> None:
    base = out / "shards" / f"{shard:05d}"
    lines = [json.dumps(r) for r in records] + [json.dumps({"skipped": k, "reason": why}) for k, why in skipped]
    atomic_write_text(base.with_suffix(".jsonl"), "".join(ln + "\n" for ln in lines))
    offsets = np.concatenate([[0], np.cumsum([r["frames"] for r in records])]).astype(np.int64)
    states = torch.from_numpy(flat) if flat is not None else torch.zeros(0, 1, dtype=torch.float16)
    tmp = base.with_name(f".{base.name}.tmp.safetensors")
    save_file({"states": states.contiguous(), "offsets": torch.from_numpy(offsets)}, tmp)
    tmp.replace(base.with_suffix(".safetensors"))  # last: its presence marks the shard done


def write_alignment_set(out: str | Path, records: list[dict], states: list[torch.Tensor], *, encoder: str,
                        encoder_identity: str, policy: dict, shard_size: int = 500, **meta) -> Path:
    """Write clips whose encoder states are already computed as an alignment set (one call, no
    synthesis): e.g. real recordings encoded by a caller, or tiny sets in tests.

    Args:
        records: per clip at least ``id`` and ``text`` (and ``seconds``, ``voice`` when known).
        states: per clip ``(frames, C)`` encoder states under ``policy``.
        encoder, encoder_identity, policy: what produced the states (checked by ``omnishift align``).
    """
    out = Path(out)
    if len(records) != len(states):
        raise ValueError(f"{len(records)} records but {len(states)} state tensors")
    (out / "shards").mkdir(parents=True, exist_ok=True)
    full = {"n": len(records), "policy": policy, "encoder": encoder, "encoder_identity": encoder_identity, **meta}
    full["fingerprint"] = _fingerprint(full)
    for s in range(0, len(records), shard_size):
        recs = [{"seconds": 0.0, "voice": "", **r, "frames": int(st.shape[0])}
                for r, st in zip(records[s:s + shard_size], states[s:s + shard_size])]
        flat = torch.cat([st.float() for st in states[s:s + shard_size]]).half().numpy()
        _write_shard(out, s // shard_size, recs, flat, [])
    atomic_write_text(out / "meta.json", json.dumps(full, indent=2) + "\n")
    return out


def set_stats(out: str | Path) -> dict:
    """Clips, skipped clips, hours of speech and distinct voices in a (possibly partial) set."""
    clips = skipped = 0
    seconds, voices = 0.0, set()
    for f in sorted((Path(out) / "shards").glob("*.jsonl")):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            if "skipped" in r:
                skipped += 1
                continue
            clips += 1
            seconds += r["seconds"]
            voices.add(r["voice"])
    return {"clips": clips, "skipped": skipped, "hours": round(seconds / 3600, 3), "distinct_voices": len(voices)}


def load_alignment_set(out: str | Path, limit: int | None = None) -> tuple[dict, list[dict]]:
    """``(meta, items)``; each item is its record plus ``encoder_states`` ``(frames, C)`` (fp16)."""
    out = Path(out)
    if not (out / "meta.json").is_file():
        raise FileNotFoundError(f"{out} is not an alignment set (no meta.json): build one with `omnishift data align`")
    meta = json.loads((out / "meta.json").read_text())
    items = []
    for f in sorted((out / "shards").glob("*.safetensors")):
        if f.name.startswith("."):
            continue
        # read each shard in one sequential pass: memory-mapped shards were paged in at random by
        # the first epoch's batches (3-9 s per step instead of 1.6 s on a 10-GB, three-set run)
        t = load(f.read_bytes())
        states, offsets = t["states"], t["offsets"].tolist()
        records = [json.loads(ln) for ln in f.with_suffix(".jsonl").read_text().splitlines()]
        records = [r for r in records if "skipped" not in r]
        if len(records) != len(offsets) - 1:
            raise ValueError(f"{f}: {len(records)} records but {len(offsets) - 1} clips; delete the shard to rebuild it")
        for j, r in enumerate(records):
            items.append({**r, "encoder_states": states[offsets[j]:offsets[j + 1]]})
            if limit and len(items) >= limit:
                return meta, items
    return meta, items



