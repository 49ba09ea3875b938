"""The shipped alignment recipe, run end to end on tiny models: sets, phases, the decoding it carries."""

from __future__ import annotations

import json

import pytest
import yaml
from tiny_models import save_tiny_parts

from omnishift.align.recipe import RECIPES, RecipeConfig, load_recipe, run_recipe, shipped
from omnishift.schema import ConfigError


@pytest.fixture()
def tiny_recipe(tmp_path, tiny_tokenizer):
    """cpu_listen as shipped, on tiny models: 2 sets x 16 clips of the demo texts, 3 steps a phase, and a
    second phase that grows one context layer (a later phase starts from the earlier one's adaptor)."""
    parts = save_tiny_parts(tmp_path / "parts", tiny_tokenizer, seed=3, adaptor_norm=True, ctc_head=True,
                            frame_policy="clip", k=1)
    d = yaml.safe_load(shipped("cpu_listen").read_text())
    d["model"] = dict(parts.__dict__)
    d["out_dir"], d["workers"] = str(tmp_path / "recipe"), 0
    d["sets"] = [{**s, "n": 16, "engines": "espeak", "source": "builtin:demo_data/instructions.jsonl"}
                 for s in d["sets"][:2]]
    phase = d["phases"][0]
    phase["loop"]["max_steps"], phase["data"]["heldout"] = 3, 2
    phase["objectives"][0].update(batch_size=4, options={**phase["objectives"][0]["options"], "negatives": 16})
    d["phases"].append({**phase, "name": "grow", "grow_layers": 1})
    f = tmp_path / "recipe.yaml"
    f.write_text(yaml.safe_dump(d))
    return f, d


def test_the_recipe_runs_resumes_and_its_folder_carries_the_decoding(tiny_recipe, tmp_path, capsys):
    from omnishift.cli import main
    from omnishift.models.ctc_decode import BeamSettings
    from omnishift.models.speech_llm import SpeechLLM

    f, d = tiny_recipe
    cfg, origin = load_recipe(f)
    final = run_recipe(cfg, origin, progress=False)
    saved = json.loads((final / "omnishift_config.json").read_text())
    assert saved["ctc_decoding"] == d["decoding"] == {"beam": 4, "lm_weight": 0.5, "length_bonus": 3.0, "eos_weight": 0.5}
    assert saved["speech_input"] == "ctc_top1" and saved["adaptor_layers"] == 1  # the grown phase's adaptor
    assert SpeechLLM.from_pretrained(final).beam_settings == BeamSettings(**d["decoding"])
    record = json.loads((tmp_path / "recipe" / "recipe.json").read_text())
    assert [p.get("set") or p.get("phase") for p in record["parts"]] == ["piper8k", "sil8k", "mlp", "grow"]
    assert [p["clips"] for p in record["parts"][:2]] == [16, 16]
    mlp = tmp_path / "recipe" / "phases" / "mlp" / "final" / "adaptor.safetensors"
    before = mlp.stat().st_mtime_ns
    run_recipe(load_recipe(f)[0], origin, progress=False)  # a rerun reuses every part
    assert mlp.stat().st_mtime_ns == before

    # eval reads the folder's decoding: no --ctc-* flags, and the summary says what was used
    out = tmp_path / "eval"
    assert main(["eval", str(final), "--benchmark", "builtin:demo_data/qa_trivia.jsonl".replace(
        "builtin:", str(shipped("cpu_listen").parent.parent) + "/"), "--limit", "2", "--mode", "s2t",
        "--audio-dir", str(tmp_path / "audio"), "--max-new-tokens", "2", "--out", str(out)]) == 0
    s = json.loads((out / "s2t" / "summary.json").read_text())
    assert s["ctc_decoding"] == d["decoding"] and s["speech_input"] == "ctc_top1"


def test_a_changed_recipe_is_refused_part_by_part_or_redone(tiny_recipe, tmp_path):
    f, d = tiny_recipe
    cfg, origin = load_recipe(f)
    run_recipe(cfg, origin, progress=False)
    d["phases"][0]["optim"]["lr"] = 5e-3
    f.write_text(yaml.safe_dump(d))
    with pytest.raises(ValueError, match=r"phases/mlp: this alignment phase 'mlp' was made from other inputs \(changed: "
                                         r"\['config'\]\); rerun with a new out_dir \(or, in omnishift run, --redo align\)"):
        run_recipe(*load_recipe(f), progress=False)
    d["phases"][0]["optim"]["lr"] = 1e-3
    d["sets"][1]["seed"] = 99
    f.write_text(yaml.safe_dump(d))
    with pytest.raises(ValueError, match=r"sets/sil8k: this alignment set 'sil8k' was made from other inputs \(changed: "
                                         r"\['seed'\]\)"):
        run_recipe(*load_recipe(f), progress=False)
    run_recipe(*load_recipe(f), progress=False, redo=True)  # redo: the changed set, and the phases on it, again
    assert json.loads((tmp_path / "recipe" / "sets" / "sil8k" / "meta.json").read_text())["seed"] == 99


@pytest.mark.parametrize("change, message", [
    ({"precision": "fp8"}, "precision 'fp8' unknown"),
    ({"sets": []}, "at least one entry under sets"),
    ({"decoding": {"beam": 0}}, "beam and token_top_k must be >= 1"),
    ({"phases": [{"name": "x", "objectives": [{"name": "ctc", "options": {"bf16_adaptor": True}}]}]},
     "set the recipe's precision"),
    ({"speech_input": "ears"}, "speech_input 'ears' unknown"),
])
def test_recipe_errors_name_the_key(tmp_path, change, message):
    d = {**yaml.safe_load(shipped("cpu_listen").read_text()), **change}
    f = tmp_path / "r.yaml"
    f.write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError, match=message):
        load_recipe(f)


def test_every_shipped_recipe_loads_and_is_listed(capsys):
    from omnishift.cli import main

    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for name in RECIPES:
        cfg, _ = load_recipe(name)
        assert isinstance(cfg, RecipeConfig) and f"omnishift align {name}" in out
        assert shipped(name).read_text().splitlines()[0] == f"# omnishift align {name}"  # the command that runs it
    cfg, _ = load_recipe("cpu_listen", ["phases.0.loop.max_steps=7", "out_dir=elsewhere"])
    assert cfg.phases[0].loop["max_steps"] == 7 and cfg.out_dir == "elsewhere"
