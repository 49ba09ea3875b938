"""Turn (prompt, audio, response) items into one padded batch for the speech LLM.

The prompt goes through the LLM's own chat template, so a text-only item is tokenised exactly as
the base LLM would see it. Where the ``<speech>`` placeholder stands, the batch reserves as many
slots as the audio will yield speech embeddings; :class:`~omnishift.models.speech_llm.SpeechLLM`
fills those slots (``speech_mask``) with adaptor outputs. The placeholder is never added to the
vocabulary, so the LLM's embedding table stays untouched. Labels cover only the assistant
response (and its end-of-turn token); everything else is ``-100``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from omnishift.models.encoder import SAMPLE_RATE

IGNORE_INDEX = -100
FRAMES_PER_SECOND = 50  # Whisper: 100 mel frames/s, conv2 stride 2
S2T_INSTRUCTION = "Please directly answer the questions in the user's speech."
SPEECH_PLACEHOLDER = "<speech>"
POLICIES = ("trim", "pad30", "clip")


def s2t_prompt(placeholder: str = SPEECH_PLACEHOLDER) -> str:
    """LLaMA-Omni's Stage-1 user turn: the speech, then the instruction to answer it."""
    return f"{placeholder}\n{S2T_INSTRUCTION}"


def t2t_prompt(question: str) -> str:
    """The same user turn with the question as text (the T2T counterpart of :func:`s2t_prompt`)."""
    return f"{question}\n{S2T_INSTRUCTION}"


@dataclass
class FramePolicy:
    """How many encoder frames of a clip reach the adaptor.

    ``pad30`` keeps all 1500 frames of Whisper's 30 s window (LLaMA-Omni: 300 embeddings per clip
    whatever its length). ``trim`` keeps the frames covering the real audio plus ``margin_s``,
    rounded up to a multiple of ``k`` so no real frame is dropped: 3 s -> 32 embeddings.
    ``clip`` keeps the same frames as ``trim`` but the encoder *sees* only them (the log-mel
    window is cut to the clip + margin before encoding, :func:`~omnishift.models.encoder.encode_window`):
    ~20x cheaper than encoding 30 s, and different features (self-attention no longer spans the
    padding), so a model must be trained and used with one policy; :attr:`short_window` says which.
    """

    policy: str = "trim"
    k: int = 5
    margin_s: float = 0.2
    max_frames: int = 1500

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"frame policy {self.policy!r} unknown: use one of {POLICIES}")

    @property
    def short_window(self) -> bool:
        """True when the encoder runs on the kept frames only (``clip``), not the 30 s window."""
        return self.policy == "clip"

    def encoder_frames(self, num_samples: int, sample_rate: int = SAMPLE_RATE) -> int:
        """Encoder frames kept for a clip of ``num_samples`` samples (a multiple of ``k``)."""
        if self.policy == "pad30":
            return (self.max_frames // self.k) * self.k
        seconds = num_samples / sample_rate + self.margin_s
        frames = math.ceil(seconds * FRAMES_PER_SECOND / self.k) * self.k
        return min(frames, (self.max_frames // self.k) * self.k)

    def num_embeddings(self, num_samples: int, sample_rate: int = SAMPLE_RATE) -> int:
        """Speech embeddings the adaptor yields for the clip."""
        return self.encoder_frames(num_samples, sample_rate) // self.k


def load_states(x) -> torch.Tensor:
    """Encoder states given as a tensor or as a feature-cache safetensors file."""
    if isinstance(x, torch.Tensor):
        return x
    from safetensors.torch import load_file

    return load_file(str(x))["states"]


class SpeechLLMProcessor:
    """Builds batches: chat template, placeholder slots, labels, padding, log-mel features.

    Args:
        tokenizer: the LLM's tokenizer (with a chat template and a pad token).
        feature_extractor: Whisper feature extractor (log-mel, 30 s window).
        frame_policy: :class:`FramePolicy`.
        placeholder: the string marking where speech goes in the user turn.
    """

    def __init__(self, tokenizer, feature_extractor, frame_policy: FramePolicy, placeholder=SPEECH_PLACEHOLDER):
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        self.frame_policy = frame_policy
        self.placeholder = placeholder
        # When set (a SpeechLLM whose speech input is CTC-compressed), maps one clip's audio or
        # encoder states to ``(states (frames, C), SpeechPlan)``: n slots, n depending on what is
        # said (:mod:`~omnishift.models.speech_inputs`); the batch then carries the states and the plan.
        self.speech_planner = None

    def _template(self, prompt: str, response: str | None) -> tuple[str, str]:
        """Return (prompt text up to the assistant turn, full text with the response)."""
        user = [{"role": "user", "content": prompt}]
        head = self.tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        if response is None:
            return head, head
        full = self.tokenizer.apply_chat_template(
            user + [{"role": "assistant", "content": response}], tokenize=False
        )
        if not full.startswith(head):
            raise ValueError("chat template renders the prompt differently with a response; cannot mask labels")
        return head, full

    def num_response_tokens(self, item: dict) -> int:
        """How many labelled tokens ``item`` contributes (no audio work needed)."""
        if item.get("response") is None:
            return 0
        head, full = self._template(item["prompt"], item["response"])
        return len(self._encode(full[len(head):]))

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def __call__(self, items: list[dict], padding_side: str = "right") -> dict[str, torch.Tensor]:
        """Build a batch.

        Args:
            items: dicts with ``prompt`` (str; contains the placeholder iff speech is given),
                optional ``audio`` (float32 mono 16 kHz array) or ``encoder_states`` (cached
                ``(frames, C)`` encoder output or its cache file), and optional ``response``.
            padding_side: ``right`` for training, ``left`` for generation.

        Returns:
            ``input_ids``, ``attention_mask``, ``labels`` (B, L); ``speech_mask`` (B, L) marking
            speech slots; and when items have speech, ``speech_frames`` (N,) encoder frames to
            keep per clip, in item order, plus ``input_features`` (N, n_mels, 3000) for raw audio
            or ``encoder_states`` (N, max frames, C) for cached states; with a
            :attr:`speech_planner`, always ``encoder_states`` plus the plan: ``speech_tokens`` (S,),
            ``speech_spans`` (S, 2) and ``speech_slots`` (N,), S being the slots of all clips.
        """
        rows, speech_audio, speech_states, speech_frames, plans = [], [], [], [], []
        for i, item in enumerate(items):
            prompt = item["prompt"]
            audio = item.get("audio") if item.get("audio") is not None else item.get("encoder_states")
            n_slots = prompt.count(self.placeholder)
            if (audio is None) != (n_slots == 0) or n_slots > 1:
                raise ValueError(
                    f"item {i}: prompt has {n_slots} {self.placeholder!r} placeholder(s) but audio is "
                    f"{'missing' if audio is None else 'given'}; use exactly one placeholder with audio, none without"
                )
            head, full = self._template(prompt, item.get("response"))
            if audio is None:
                ids, is_speech = self._encode(head), None
            else:
                before, after = head.split(self.placeholder)
                n_emb = None
                if self.speech_planner is not None:  # variable-length input (see speech_planner)
                    states, plan = self.speech_planner(audio)  # frames, C ; n slots
                    frames, n_emb = states.shape[0], len(plan.tokens)
                    speech_states.append(states)
                    plans.append(plan)
                elif item.get("audio") is not None:
                    frames = self.frame_policy.encoder_frames(len(audio))
                    speech_audio.append(np.asarray(audio, dtype=np.float32))
                else:  # cached encoder output (a tensor, or a feature-cache file)
                    states = load_states(audio)  # frames, C
                    frames = states.shape[0]
                    speech_states.append(states)
                n_emb = frames // self.frame_policy.k if n_emb is None else n_emb
                pre, post = self._encode(before), self._encode(after)
                ids = pre + [self.tokenizer.pad_token_id] * n_emb + post
                is_speech = [False] * len(pre) + [True] * n_emb + [False] * len(post)
                speech_frames.append(frames)
            resp = self._encode(full[len(head):]) if item.get("response") is not None else []
            labels = [IGNORE_INDEX] * len(ids) + resp
            is_speech = (is_speech or [False] * len(ids)) + [False] * len(resp)
            rows.append((ids + resp, labels, is_speech))
        batch = self._pad(rows, padding_side)
        if plans:
            batch["speech_tokens"] = torch.cat([p.tokens for p in plans])  # S
            batch["speech_spans"] = torch.cat([p.spans for p in plans]).reshape(-1, 2)  # S, 2
            batch["speech_slots"] = torch.tensor([len(p.tokens) for p in plans], dtype=torch.long)  # N
        if speech_audio and speech_states:
            raise ValueError("a batch mixes raw audio and cached encoder states; attach the cache to all items")
        if speech_states:
            padded = torch.zeros(len(speech_states), max(speech_frames), speech_states[0].shape[1])
            for j, st in enumerate(speech_states):
                padded[j, : st.shape[0]] = st
            batch["encoder_states"] = padded  # N, max frames, C
            batch["speech_frames"] = torch.tensor(speech_frames, dtype=torch.long)
        if speech_audio:
            feats = self.feature_extractor(
                speech_audio, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding="max_length"
            )["input_features"]
            batch["input_features"] = feats  # N, n_mels, 3000
            batch["speech_frames"] = torch.tensor(speech_frames, dtype=torch.long)
        return batch

    def _pad(self, rows, padding_side: str) -> dict[str, torch.Tensor]:
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        length = max(len(r[0]) for r in rows)
        out = {k: torch.zeros(len(rows), length, dtype=torch.long) for k in ("input_ids", "attention_mask", "labels")}
        out["input_ids"].fill_(self.tokenizer.pad_token_id)
        out["labels"].fill_(IGNORE_INDEX)
        out["speech_mask"] = torch.zeros(len(rows), length, dtype=torch.bool)
        for b, (ids, labels, speech) in enumerate(rows):
            n = len(ids)
            sl = slice(length - n, length) if padding_side == "left" else slice(0, n)
            out["input_ids"][b, sl] = torch.tensor(ids)
            out["attention_mask"][b, sl] = 1
            out["labels"][b, sl] = torch.tensor(labels)
            out["speech_mask"][b, sl] = torch.tensor(speech)
        return out
