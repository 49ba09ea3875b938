"""What the LLM reads: how far a model's speech vectors are from its token rows (the modality gap).

A reading that fills the speech slots with token rows (``ctc_top1``) has no gap: the LLM sees a
typed transcript. The paper's kind of speech LLM feeds continuous vectors, and whether training
pushes them onto token rows or keeps them apart is part of what Stage 1 does to the LLM. Per clip
this measures, against the LLM's input embedding table:

* ``cosine_gap``: 1 - the cosine similarity of each vector to its nearest token row (0: on a row);
* ``norm_ratio``: mean vector norm over mean token-row norm (off-scale inputs are another gap);
* the nearest-token reading as text, and its word error rate against the clip's transcript
  (what the vectors "say" if each were snapped to its closest token).
"""

from __future__ import annotations

import torch


@torch.no_grad()
def modality_gap(model, clips: list, texts: list[str], examples: int = 5) -> dict:
    """The gap of ``model``'s speech vectors on ``clips`` (audio or encoder states), ``texts`` their
    transcripts; returns the means, quantiles, nearest-token WER and a few readings."""
    from omnishift.evaluate.wer import corpus_wer

    rows = model.llm.get_input_embeddings().weight.float()  # V, H
    unit = torch.nn.functional.normalize(rows, dim=-1)
    gaps, norms, readings = [], [], []
    for clip in clips:
        v = model.speech_vectors(clip).float()  # n, H
        if not len(v):
            readings.append("")
            continue
        cos, nearest = (torch.nn.functional.normalize(v, dim=-1) @ unit.t()).max(-1)  # n, V -> n
        gaps.append(1 - cos)
        norms.append(v.norm(dim=-1))
        readings.append(model.tokenizer.decode(nearest.tolist()).strip())
    if not gaps:
        return {"clips": len(clips), "vectors": 0}
    gap, norm = torch.cat(gaps), torch.cat(norms)
    q = torch.quantile(gap, torch.tensor([0.1, 0.5, 0.9])).tolist()
    wer = corpus_wer(list(zip(texts, readings)))["wer"]
    return {"clips": len(clips), "vectors": len(gap), "cosine_gap": round(float(gap.mean()), 4),
            "cosine_gap_q10_q50_q90": [round(x, 4) for x in q],
            "norm_ratio": round(float(norm.mean() / rows.norm(dim=-1).mean()), 4),
            "nearest_token_wer": wer,
            "nearest_token_examples": [{"text": t, "reading": r} for t, r in zip(texts[:examples], readings)]}
