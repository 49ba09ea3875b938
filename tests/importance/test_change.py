"""Fig. 4 parameter-change deltas: full |W_ft − W_base|, LoRA scale·B·A (live and saved), the figure."""

from __future__ import annotations

import pytest
import torch
from tiny_models import make_tiny_llm

from omnishift.importance.change import change_summary, lora_deltas, normalize, plot_change_heatmaps, weight_deltas
from omnishift.importance.clustering import select_matrices
from omnishift.importance.scores import MODULES


@pytest.fixture()
def lora_setup(tmp_path):
    from peft import LoraConfig, get_peft_model

    llm = make_tiny_llm(64, seed=0)
    base = {k: v.detach().clone() for k, v in llm.state_dict().items()}
    peft_model = get_peft_model(llm, LoraConfig(r=4, lora_alpha=8, target_modules=list(MODULES),
                                                init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    return base, peft_model, tmp_path / "adapter"


def test_lora_delta_equals_merged_minus_base(lora_setup):
    base, peft_model, adapter_dir = lora_setup
    names = [n for n in base if n.split(".")[-2] in MODULES]
    assert len(names) == 14 and all(n.startswith("model.layers.") for n in names)
    live = lora_deltas(peft_model, names)  # scale read from the model (8 / 4)
    saved = lora_deltas(adapter_dir)  # scale read from adapter_config.json; all adapted matrices
    raw = lora_deltas(peft_model.state_dict(), names, scale=2.0)
    with pytest.raises(ValueError, match="scale"):
        lora_deltas(peft_model.state_dict(), names)
    merged = peft_model.merge_and_unload().state_dict()
    truth = weight_deltas(base, merged, names)
    assert sorted(saved) == sorted(names)
    for n in names:
        assert truth[n].abs().max() > 0
        for got in (live, saved, raw):
            assert got[n].shape == base[n].shape
            torch.testing.assert_close(got[n], truth[n], atol=1e-6, rtol=1e-5)


def test_weight_deltas_prefix_and_shapes():
    base = {"model.layers.0.mlp.up_proj.weight": torch.zeros(3, 2, dtype=torch.bfloat16)}
    tuned = {"llm.model.layers.0.mlp.up_proj.weight": torch.tensor([[1.0, -2.0], [0, 0], [0, 3]])}
    d = weight_deltas(base, tuned, list(base))
    assert d["model.layers.0.mlp.up_proj.weight"].tolist() == [[1, 2], [0, 0], [0, 3]]
    with pytest.raises(KeyError, match="not found"):
        weight_deltas(base, tuned, ["model.layers.1.mlp.up_proj.weight"])
    with pytest.raises(ValueError, match="tuned"):
        weight_deltas(base, {"model.layers.0.mlp.up_proj.weight": torch.zeros(2, 3)}, list(base))


def test_normalize():
    n = normalize(torch.tensor([[-4.0, 2.0], [0.0, 1.0]]))
    assert n.tolist() == [[1.0, 0.5], [0.0, 0.25]]
    assert normalize(torch.zeros(2, 2)).eq(0).all()


def test_plot_change_heatmaps(lora_setup, tmp_path):
    base, peft_model, adapter_dir = lora_setup
    names = select_matrices(base)  # the 7 projections of layer 1
    g = torch.Generator().manual_seed(0)
    full = {n: torch.rand(base[n].shape, generator=g) * 1e-3 for n in names}
    png = plot_change_heatmaps({"full": full, "lora": lora_deltas(adapter_dir, names)}, tmp_path / "chg.png")
    from matplotlib.image import imread

    img = imread(png)  # 2 method rows x 7 matrix columns: a wide, drawn grid
    assert img.ndim == 3 and img.shape[1] > 2 * img.shape[0] and img[..., :3].std() > 0.05
    assert [p.name for p in tmp_path.glob("*.png")] == ["chg.png"]  # no temp file left behind
    summary = change_summary({"full": full, "lora": lora_deltas(adapter_dir, names)})
    assert set(summary) == {"full", "lora"} and set(summary["full"]) == set(names)
    for n in names:
        d = full[n]
        assert summary["full"][n]["max_abs"] == pytest.approx(float(d.max()))
        assert summary["full"][n]["top_row"] == int(d.sum(1).argmax())
