"""Fill runs/feature_cache_clip (encoder states) and its ctc_tokens (beam-decoded CTC input) for the
cpu_repro_aligned clips, shard I of N, so the pipeline's trainings and evaluations all hit the cache.
usage: OMP_NUM_THREADS=1 python runs/warm_tokens.py I N"""
import sys, time, json
from pathlib import Path
import torch
torch.set_num_threads(1)
from omnishift.data.manifest import read_manifest
from omnishift.data.audio import load_audio
from omnishift.models.speech_llm import SpeechLLM
from omnishift.models.feature_cache import EncoderFeatureCache
from omnishift.models.processor import _load_states

i, n = int(sys.argv[1]), int(sys.argv[2])
run = Path("runs/cpu_repro_aligned")
model = SpeechLLM.from_pretrained(run / "align/run/final")
model.use_token_cache("runs/feature_cache_clip/ctc_tokens")
fc = EncoderFeatureCache("runs/feature_cache_clip", model)
sets = [("train", run / "data/train/manifest.jsonl"), ("llama_questions", run / "data/bench/llama_questions.jsonl"),
        ("web_questions", run / "data/bench/web_questions.jsonl")]
t0 = time.time()
for name, path in sets:
    exs = read_manifest(path)
    mine = [e for j, e in enumerate(exs) if j % n == i]
    for s in range(0, len(mine), 8):
        chunk = mine[s:s + 8]
        audios = [load_audio(e.audio, item=e.id) for e in chunk]
        states = [_load_states(p) for p in fc.states(audios)]
        model.clip_tokens(states)
        print(json.dumps({"set": name, "done": s + len(chunk), "of": len(mine), "hits": model.token_cache.hits,
                          "misses": model.token_cache.misses, "s": round(time.time() - t0)}), flush=True)
# the listening check reads raw held-out audio (one clip at a time)
for j, e in enumerate(read_manifest(run / "data/heldout/manifest.jsonl")[:64]):
    if j % n == i:
        model.ctc_compress(load_audio(e.audio, item=e.id))
print(json.dumps({"set": "heldout", "done": True, "s": round(time.time() - t0)}), flush=True)
