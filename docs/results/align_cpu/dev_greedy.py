"""Greedy CTC WER of adaptors, weight averages (soups) and posterior ensembles on the sets' held-out
synthetic clips (the selection criterion) and on the 300 LLaMA Questions recordings (reported only).

python docs/results/align_cpu/dev_greedy.py SPEC... > dev_greedy.json

SPEC: a speech-LLM folder; ``soup:A,B,...`` (the adaptors' weights averaged); ``ens:A,B,...`` (their
CTC log-probabilities averaged frame by frame). All adaptors must share one architecture, encoder and
frame policy. Held-out clips: the last 100 of set_piper8k, set_sil24k and set_pico12k (heldout.py), or of
the sets named in DEV_SETS.
"""
import json
import os
import sys
import time

import torch
from safetensors.torch import load_file

from heldout import heldout  # beside this script
from manifests import write_all

from omnishift.data.audio import load_audio
from omnishift.data.manifest import read_manifest
from omnishift.evaluate.wer import corpus_wer
from omnishift.models.speech_llm import SpeechLLM

# the sets whose held-out clips are read (DEV_SETS=a,b,c: e.g. the recipe's set_piper8k,set_sil8k,set_pico8k)
SETS = os.environ.get("DEV_SETS", "set_piper8k,set_sil24k,set_pico12k").split(",")


def adaptor_weights(spec: str) -> tuple[str, list[dict]]:
    """The spec's first folder and the state dicts whose CTC log-probs are averaged (one for a
    folder or a soup)."""
    kind, _, rest = spec.partition(":") if spec.startswith(("soup:", "ens:")) else ("one", "", spec)
    folders = rest.split(",")
    sds = [load_file(f"{p}/adaptor.safetensors") for p in folders]
    if kind == "soup":
        return folders[0], [{k: sum(sd[k].float() for sd in sds) / len(sds) for k in sds[0]}]
    return folders[0], sds


def greedy_pairs(m, sds, items) -> list[tuple[str, str]]:
    """(reference, greedy transcript) of the frame-wise mean log-probs of the adaptors ``sds``."""
    per_adaptor = []
    for sd in sds:
        m.adaptor.load_state_dict(sd)
        per_adaptor.append([lp.to(torch.bfloat16) for lp in m.ctc_log_probs([x for _, x in items])])
    pairs = [(text, m.tokenizer.decode(m.ctc_tokens(torch.stack([z.float() for z in lps]).mean(0))).strip())
             for (text, _), *lps in zip(items, *per_adaptor)]
    return pairs


def wer(pairs) -> float:
    return round(100 * corpus_wer(pairs)["wer"], 2)


if __name__ == "__main__":
    torch.set_num_threads(2)
    dev = {s: [(it["text"], it["encoder_states"]) for it in heldout(s, 100)] for s in SETS}
    ex, llamaq = read_manifest(write_all()[0]), None
    out = {"dev_sets": SETS, "dev_clips_per_set": 100, "results": {}}
    for spec in sys.argv[1:]:
        t0, (folder, sds) = time.time(), adaptor_weights(spec)
        m = SpeechLLM.from_pretrained(folder)  # greedy (no ctc_decoding); the spec's architecture
        m.adaptor.eval()
        if llamaq is None:  # one encoder and frame policy for every spec: encode the recordings once
            llamaq = [(e.text, x) for e, x in zip(ex, m.encode_audio([load_audio(e.audio, item=e.id) for e in ex]))]
        pairs = {s: greedy_pairs(m, sds, items) for s, items in dev.items()}
        r = {s: wer(p) for s, p in pairs.items()}
        r["dev"] = wer([x for p in pairs.values() for x in p])
        r["llamaq"] = wer(greedy_pairs(m, sds, llamaq))
        out["results"][spec] = r
        print(spec, r, round(time.time() - t0), "s", file=sys.stderr, flush=True)
    print(json.dumps(out, indent=1))
