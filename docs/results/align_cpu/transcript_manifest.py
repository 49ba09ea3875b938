"""LLaMA Q with each question replaced by the adaptor's CTC transcript (T2T on it = the adaptor as an ASR front end)."""
import json, sys
from omnishift.data.sources import load_source
tr = {json.loads(l)["id"]: json.loads(l)["transcript"] for l in open(sys.argv[1])}
with open(sys.argv[2], "w") as f:
    for e in load_source("llama_questions"):
        f.write(json.dumps({"id": e.id, "text": tr[e.id], "answers": e.answers}) + "\n")
