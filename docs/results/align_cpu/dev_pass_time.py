"""Time one dev pass of an align run: the greedy WER and CTC loss over its held-out clips (``dev_metrics``).

python docs/results/align_cpu/dev_pass_time.py CONFIG FOLDER   # e.g. configs/align/ctc2h_grow.yaml runs/align/ctc2h/final
"""
import json
import sys
import time

from omnishift.align.config import load_align_config
from omnishift.align.trainer import dev_metrics, load_sets
from omnishift.models.speech_llm import SpeechLLM

if __name__ == "__main__":
    cfg = load_align_config(sys.argv[1])
    m = SpeechLLM.from_pretrained(sys.argv[2])
    _, dev, _ = load_sets(m, cfg)
    t = time.perf_counter()
    r = dev_metrics(m, dev)
    print(json.dumps({"folder": sys.argv[2], "dev": len(dev), "dev_wer": r["dev_wer"], "dev_ctc": r["dev_ctc"],
                      "seconds": round(time.perf_counter() - t, 1)}))
