"""Speech-LLM folder from an align checkpoint: the run's starting folder with the checkpoint's adaptor."""
import json, shutil, sys
from pathlib import Path
from safetensors.torch import load_file, save_file
base, ckpt, out = map(Path, sys.argv[1:4])
shutil.copytree(base, out, dirs_exist_ok=True)
sd = load_file(ckpt / "trainable.safetensors")
save_file({k[len("adaptor."):]: v.contiguous() for k, v in sd.items() if k.startswith("adaptor.")}, out / "adaptor.safetensors")
print(out)
