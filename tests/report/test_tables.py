"""Report tables from hand-made stage outputs: exact Markdown cells."""

from __future__ import annotations

from omnishift.report.tables import (
    accuracy_table, clustering_table, deactivation_table, front_table, shift_table, to_csv, to_markdown,
    training_table,
)


def _s(acc, lo, hi, n=50):
    return {"accuracy": acc, "ci95": [lo, hi], "n": n}


def test_table1_cells():
    doc = {"fraction": 0.03, "model": "smollm2", "scope": "layers", "rows": [
        {"input": "text", "base": 8.2831, "top": 123456.0, "bottom": 8.3012, "random": 9.87, "zeroed": {"top": 2700000}},
        {"input": "speech", "base": 40.5, "top": 2.5e6, "bottom": 41.0, "random": 55.55, "zeroed": {"top": 2700000}}]}
    t = deactivation_table(doc)
    md = to_markdown(t).splitlines()
    assert md[0] == "**Table 1. Held-out perplexity after deactivating 3% of the parameters by importance (top / bottom / random)**"
    assert md[2] == "| Model | Input | Base | Top 3% | Bottom 3% | Random 3% |"
    assert md[4] == "| smollm2 | text | 8.28 | 1.23e+05 | 8.3 | 9.87 |"
    assert md[5] == "| smollm2 | speech | 40.5 | 2.50e+06 | 41 | 55.5 |"
    assert "2,700,000 entries zeroed" in md[-1]


def test_table2_cells_bold_best_and_missing():
    cells = {("No-FT", "llama_questions", "t2t"): _s(0.33, 0.277, 0.383, 300),
             ("Cascade", "llama_questions", "s2t"): _s(0.2, 0.15, 0.25, 300),
             ("Full-FT", "llama_questions", "t2t"): _s(0.25, 0.2, 0.3, 300),
             ("Full-FT", "llama_questions", "s2t"): _s(0.1, 0.066, 0.134, 300),
             ("LoRA", "llama_questions", "t2t"): _s(0.33, 0.28, 0.38, 300),
             ("LoRA", "llama_questions", "s2t"): _s(0.15, 0.11, 0.19, 300),
             ("LoRA", "web_questions", "t2t"): _s(0.5, 0.4, 0.6, 500)}
    t = accuracy_table("table2", "Table 2.", cells, ["No-FT", "Cascade", "Full-FT", "LoRA"],
                       ["llama_questions", "web_questions"])
    md = to_markdown(t).splitlines()
    assert md[2] == "| Method | LLaMA Q T2T | LLaMA Q S2T | Web Q T2T |"
    assert md[4] == "| No-FT | **33.0 (27.7–38.3)** | - | - |"
    assert md[5] == "| Cascade | - | **20.0 (15.0–25.0)** | - |"
    assert md[6] == "| Full-FT | 25.0 (20.0–30.0) | 10.0 (6.6–13.4) | - |"
    assert md[7] == "| LoRA | **33.0 (28.0–38.0)** | 15.0 (11.0–19.0) | 50.0 (40.0–60.0) |"  # ties are both bold
    assert md[-1] == "Accuracy % (bootstrap 95% CI); best per column in bold; n = LLaMA Q T2T 300, LLaMA Q S2T 300, Web Q T2T 500."
    csv = to_csv(t).splitlines()
    assert csv[0] == "Method,LLaMA Q T2T,LLaMA Q S2T,Web Q T2T"
    assert csv[1] == "No-FT,33.0 (27.7–38.3),-,-"


def test_table3_single_row_is_not_bold():
    t = accuracy_table("t3", "Table 3.", {("r=8", "trivia", "s2t"): _s(0.125, 0.0, 0.25, 8)}, ["r=8"], ["trivia"],
                       title="LoRA rank")
    assert to_markdown(t).splitlines()[4] == "| r=8 | 12.5 (0.0–25.0) |"


def test_shift_training_and_clustering_tables():
    metrics = {"full": {"js_divergence_bits": 0.01234, "spearman_layers": 0.95, "peak_layer": {"a": 20, "b": 3},
                        "total_mass_ratio": 0.512, "thirds": {"a": {"last": 0.4}, "b": {"last": 0.25}}}}
    row = to_markdown(shift_table(metrics, display=str.upper)).splitlines()[4]
    assert row == "| FULL | 0.0123 | 0.950 | 20 → 3 | 0.512 | 40.0 → 25.0 |"
    tr = training_table({"lora": {"steps": 25, "final_loss": 1.23456, "trainable_parameters": 4884480,
                                  "fixed_entries": 0}})
    assert to_markdown(tr).splitlines()[4] == "| lora | 25 | 1.2346 | 4,884,480 | 0 |"
    cl = clustering_table({"text": {"q": {"score": 3.14159}, "k": {"score": 1.0}}, "speech": {"q": {"score": 2.0}}},
                          "Fig. 1 scores", "c")
    lines = to_markdown(cl).splitlines()
    assert lines[2] == "| Matrix | text | speech |"
    assert lines[4:6] == ["| q | ×3.14 | ×2.00 |", "| k | ×1.00 | - |"]


def test_pipes_are_escaped():
    t = accuracy_table("x", "c", {("a|b", "m", "t2t"): _s(1.0, 1.0, 1.0, 1)}, ["a|b"], ["m"])
    assert "| a\\|b |" in to_markdown(t)


def test_front_table_target_front_and_best_point():
    def c(acc):
        return {"accuracy": acc, "ci95": [acc - 0.05, acc + 0.05], "n": 300}

    cells = {("no_ft", "q", "t2t"): c(0.30), ("cascade", "q", "s2t"): c(0.29),
             ("frozen", "q", "t2t"): c(0.30), ("frozen", "q", "s2t"): c(0.02),   # keeps T2T, hardly listens
             ("full", "q", "t2t"): c(0.38), ("full", "q", "s2t"): c(0.00),       # best T2T: on the front
             ("lora", "q", "t2t"): c(0.295), ("lora", "q", "s2t"): c(0.01),      # dominated by frozen
             ("half", "q", "t2t"): c(0.28), ("half", "q", "s2t"): c(0.10)}       # best S2T, T2T 2 pts down
    t, notes = front_table(cells, ["frozen", "full", "lora", "half"], ["q"])
    assert t.header == ["Method", "q ΔT2T", "q ΔS2T", "q target", "q front"]
    rows = {r[0]: r[1:] for r in t.rows}
    assert rows["frozen"] == ["+0.0", "-27.0", "no", "yes"]
    assert rows["full"] == ["+8.0", "-29.0", "no", "yes"]
    assert rows["lora"] == ["-0.5", "-28.0", "no", "no"]
    assert rows["half"] == ["-2.0", "-19.0", "no", "yes"]
    # shortfalls: frozen 0 + 27, full 0 + 29, lora 0 + 28, half 1 (beyond the 1-pt tolerance) + 19 = 20
    assert notes == ["q: target not met; closest is half with T2T 28.0 (No-FT 30.0) and S2T 10.0 (cascade 29.0): "
                     "20.0 points short in all."]
    cells[("half", "q", "s2t")] = c(0.29)
    cells[("half", "q", "t2t")] = c(0.291)  # within 1 point of No-FT, S2T = cascade
    t, notes = front_table(cells, ["frozen", "full", "lora", "half"], ["q"])
    assert {r[0]: r[3] for r in t.rows}["half"] == "yes" and notes[0].startswith("q: target met by half")
