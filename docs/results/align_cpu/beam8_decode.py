from omnishift.models.speech_llm import SpeechLLM
from omnishift.align.decode import decode_clips
import time

from manifests import write_all  # beside this script

if __name__ == "__main__":
    m = SpeechLLM.from_pretrained("runs/align/ctc_sil/final", speech_input="ctc_top1",
                                  ctc_decoding={"beam": 8, "lm_weight": 0.5, "length_bonus": 3.0})
    m.save_pretrained("runs/align/ctc_sil_beam8", llm_is_base=True)
    t = time.time()
    print(decode_clips("runs/align/ctc_sil_beam8", "runs/feature_cache_clip",
                       [write_all()[0]], workers=2), round(time.time() - t), "s")
