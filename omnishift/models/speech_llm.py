"""Encoder -> adaptor -> LLM: the speech LLM of the LLaMA-Omni paradigm (paper Sec. 2.1).

A frozen Whisper encoder turns audio into frames, :class:`FrameStackAdaptor` maps them into the
LLM's embedding space, and the embeddings replace the slots the processor reserved for the
``<speech>`` placeholder. A batch without audio goes to the LLM as plain ``input_ids``, so text
input gives exactly the base LLM's logits: T2T evaluation and text importance measure the LLM
itself, not a wrapper.

A saved speech LLM is one folder::

    omnishift_config.json   SpeechLLMConfig + what the LLM part is ("full" or "peft")
    adaptor.safetensors     adaptor weights
    llm/                    full LLM weights + tokenizer (save_pretrained), or
    llm_adapter/            a PEFT adapter over the base LLM named in the config
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from omnishift.models.adaptor import FrameStackAdaptor, ctc_scale_init
from omnishift.models.ctc_decode import LLMPrior, beam_settings, ctc_beam_search, user_turn_context, user_turn_end
from omnishift.models.encoder import encode_clips, encode_kept
from omnishift.models.defaults import DEFAULT_ENCODER, DEFAULT_LLM, load_encoder, load_llm
from omnishift.models.processor import SPEECH_PLACEHOLDER, FramePolicy, SpeechLLMProcessor
from omnishift.models.speech_inputs import SPEECH_INPUTS, SpeechPlan, reading
from omnishift.paths import atomic_dir, atomic_write_text
from omnishift.schema import build

CONFIG_NAME = "omnishift_config.json"
ADAPTOR_NAME = "adaptor.safetensors"
__all__ = ["READING_KEYS", "SPEECH_INPUTS", "SpeechLLM", "SpeechLLMConfig", "load_speech_llm"]


def _has_speech(batch: dict) -> bool:
    return "speech_frames" in batch


@dataclass
class SpeechLLMConfig:
    """What a speech LLM is made of.

    Args:
        llm: default-model name, HF id or folder of the base LLM.
        encoder: default-model name, HF id or folder of the Whisper encoder.
        k: frames stacked per speech embedding (LLaMA-Omni: 5).
        adaptor_hidden: adaptor MLP width (LLaMA-Omni: 2048).
        frame_policy: ``trim`` (real audio + margin, from the 30 s window's encoding), ``clip`` (the
            same frames, encoded from a window of the clip + margin only: ~20x cheaper) or
            ``pad30`` (always 30 s -> 1500/k embeddings).
        trim_margin_s: audio seconds kept after the end of the clip under ``trim``.
        placeholder: user-turn marker replaced by the speech embeddings.
        seed: seed for the adaptor's initialisation.
        adaptor_norm: end the adaptor with an RMSNorm whose gain starts at the RMS of the LLM's
            token embeddings (False: LLaMA-Omni's plain MLP, whose checkpoints load unchanged).
        ctc_head: give the adaptor a CTC blank class, so it can be aligned with CTC over the LLM's
            vocabulary (:mod:`omnishift.align`) and its transcript read back (:meth:`SpeechLLM.ctc_transcripts`).
        speech_input: what fills the speech slots, a name in
            :data:`~omnishift.models.speech_inputs.SPEECH_INPUTS`: ``adaptor`` (one adaptor output
            per k frames, LLaMA-Omni), or one slot per CTC segment (needs ``ctc_head``): token rows
            (``ctc_top1``, no gradient to the adaptor), posterior-weighted rows (``ctc_soft``) or
            the adaptor's own outputs (``ctc_peak``).
        speech_options: settings of that reading (its ``options`` dataclass, e.g. ``{"temperature": 0.5}``).
        adaptor_layers: Transformer layers over the adaptor outputs (context across 100-ms
            embeddings, see :class:`FrameStackAdaptor`); 0 is LLaMA-Omni's plain MLP.
        ctc_decoding: how the CTC path is read (``ctc_top1`` and :meth:`SpeechLLM.ctc_transcripts`):
            None is greedy; a dict of :class:`~omnishift.models.ctc_decode.BeamSettings` fields
            (e.g. ``{"beam": 8, "lm_weight": 0.5, "length_bonus": 1.0}``) is prefix beam search
            with the base LLM ``llm``, frozen, as the language model (shallow fusion;
            :meth:`SpeechLLM.prior_llm`).
    """

    llm: str = DEFAULT_LLM
    encoder: str = DEFAULT_ENCODER
    k: int = 5
    adaptor_hidden: int = 2048
    frame_policy: str = "trim"
    trim_margin_s: float = 0.2
    placeholder: str = SPEECH_PLACEHOLDER
    seed: int = 0
    adaptor_norm: bool = False
    ctc_head: bool = False
    speech_input: str = "adaptor"
    adaptor_layers: int = 0
    ctc_decoding: dict | None = None
    speech_options: dict | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "SpeechLLMConfig":
        """Build from a dict, rejecting keys this config does not have."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown SpeechLLMConfig keys {unknown}; valid keys: {sorted(names)}")
        return cls(**d)


class SpeechLLM(nn.Module):
    """Frozen Whisper encoder + trainable adaptor + causal LM.

    Build with :meth:`from_config` (fresh adaptor) or :meth:`from_pretrained` (a saved folder);
    the constructor takes ready parts so tests can pass tiny random models. ``llm_is_base``: ``llm``
    is the untouched base model ``config.llm`` (False for a fine-tuned folder), so beam decoding
    can snapshot it as its language model.
    """

    def __init__(self, config: SpeechLLMConfig, llm, tokenizer, encoder, feature_extractor, adaptor=None,
                 llm_is_base: bool = True):
        super().__init__()
        self.config = config
        self.llm = llm
        self.tokenizer = tokenizer
        self.encoder = encoder.eval().requires_grad_(False)
        self.feature_extractor = feature_extractor
        if adaptor is None:
            with torch.random.fork_rng():
                torch.manual_seed(config.seed)
                table = llm.get_input_embeddings().weight
                scale = float(table.detach().float().pow(2).mean().sqrt()) if config.adaptor_norm else None
                adaptor = FrameStackAdaptor(encoder.config.d_model, table.shape[1], config.k, config.adaptor_hidden,
                                            norm_scale=scale, ctc_blank=config.ctc_head,
                                            ctc_scale=ctc_scale_init(table) if config.ctc_head else 1.0,
                                            layers=config.adaptor_layers)
        self.adaptor = adaptor
        policy = FramePolicy(config.frame_policy, config.k, config.trim_margin_s, encoder.config.max_source_positions)
        self.processor = SpeechLLMProcessor(tokenizer, feature_extractor, policy, config.placeholder)
        self.reading = reading(config.speech_input)
        self.speech_options = build(self.reading.options, config.speech_options or {}, "speech_options")
        if self.reading.ctc_head and not config.ctc_head:
            raise ValueError(f"speech_input {config.speech_input!r} needs an adaptor with a CTC head (ctc_head: true)")
        if self.reading.plan is not None:
            self.processor.speech_planner = self.speech_plan
        if config.ctc_decoding and not config.ctc_head:
            raise ValueError(f"ctc_decoding {config.ctc_decoding} (the --ctc-* flags) reads the CTC path of an adaptor "
                             "with a CTC head, and this model has none (ctc_head: false): drop the --ctc-* flags, or "
                             "align an adaptor with a CTC head (omnishift align)")
        self.beam_settings = beam_settings(config.ctc_decoding)
        self._lm_context = None
        self.token_cache = None  # a CTCTokenCache (use_token_cache): beam-decoded tokens per clip
        # the CTC front end (classifier table, decoder LM) is the *base* LLM's, frozen: snapshots now,
        # while ``llm`` is still the base model, or (a fine-tuned folder) the base reloaded on first
        # use; not submodules, so never trained, saved or counted in named_parameters()
        prior = copy.deepcopy(llm).eval().requires_grad_(False) if (llm_is_base and self.beam_settings) else None
        table = None
        if config.ctc_head and llm_is_base:  # the prior's rows, or a copy of llm's (which Stage 1 may train)
            table = (prior.get_input_embeddings().weight.detach() if prior is not None
                     else llm.get_input_embeddings().weight.detach().clone())
        object.__setattr__(self, "_prior_llm", prior)
        object.__setattr__(self, "_ctc_table", table)
        if self.beam_settings is not None and self.reading.plan is not None and not self.reading.beam:
            raise ValueError(f"ctc_decoding (beam search) picks tokens, not frames: speech_input "
                             f"{config.speech_input!r} pools the greedy path's frames; drop ctc_decoding "
                             f"(--ctc-beam 0) or read ctc_top1")

    @classmethod
    def from_config(cls, config: SpeechLLMConfig | None = None, dtype=torch.float32) -> "SpeechLLM":
        """Load the LLM and encoder named in ``config`` and initialise a fresh adaptor."""
        config = config or SpeechLLMConfig()
        llm, tok = load_llm(config.llm, dtype=dtype)
        encoder, fe = load_encoder(config.encoder, dtype=dtype)
        return cls(config, llm, tok, encoder, fe)

    # ---- forward -------------------------------------------------------------------------
    def speech_embeddings(self, batch: dict) -> torch.Tensor:
        """Encode clips (or take cached encoder states) and adapt only their kept frames.

        Args:
            batch: a processor batch with ``speech_frames`` (N,) and either ``input_features``
                (N, n_mels, 3000) or ``encoder_states`` (N, max frames, C).

        Returns:
            ``(sum_i speech_frames_i / k, d_llm)``: the embeddings of all clips, concatenated in order
            (or, for a CTC-compressed reading, one per planned slot: :mod:`.speech_inputs`).
        """
        if self.reading.fill is not None:
            return self.reading.fill(self, batch)
        frames = batch["speech_frames"]
        keep = int(frames.max())
        if "encoder_states" in batch:
            feats = batch["encoder_states"]  # N, >=keep, C
        else:
            feats = self.encode_features(batch["input_features"], frames)  # N, keep, C
        emb = self.adaptor(feats[:, :keep].to(self.adaptor.linear1.weight.dtype), frames)  # N, keep, C -> N, keep/k, H
        n_emb = frames // self.config.k
        valid = torch.arange(emb.shape[1], device=emb.device)[None, :] < n_emb[:, None].to(emb.device)  # N, keep/k
        return emb[valid]  # N, keep/k, H -> sum(n_emb), H

    def encode_features(self, features: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Frozen-encoder states of clips under this model's window policy (:func:`encode_kept`)."""
        return encode_kept(self.encoder, features, frames, self.processor.frame_policy.short_window)

    def encode_audio(self, audios: list) -> list[torch.Tensor]:
        """Kept encoder states per clip, ``[(frames_i, C)]``, under this model's window policy."""
        return encode_clips(self.encoder, self.feature_extractor, self.processor.frame_policy, audios)

    def input_embeddings(self, batch: dict) -> torch.Tensor:
        """Token embeddings with the speech slots filled: ``(B, L, H)``."""
        embeds = self.llm.get_input_embeddings()(batch["input_ids"])
        speech = self.speech_embeddings(batch).to(embeds.dtype)
        mask = batch["speech_mask"]
        if int(mask.sum()) != speech.shape[0]:
            raise RuntimeError(f"batch reserves {int(mask.sum())} speech slots but audio gives {speech.shape[0]}")
        return embeds.masked_scatter(mask.unsqueeze(-1), speech)

    def forward(self, batch: dict, **kwargs):
        """Run the LLM on a processor batch; returns the HF output (``loss`` when labels are given)."""
        common = dict(attention_mask=batch["attention_mask"], labels=batch.get("labels"), **kwargs)
        if not _has_speech(batch):
            return self.llm(input_ids=batch["input_ids"], **common)
        return self.llm(inputs_embeds=self.input_embeddings(batch), **common)

    @torch.no_grad()
    def generate(self, batch: dict, max_new_tokens: int = 64) -> list[str]:
        """Greedy-decode answers for a left-padded batch; returns the decoded new text per item.

        Uses :func:`omnishift.models.generation.greedy_generate` (rows leave the batch when they
        finish), which gives each row exactly its one-at-a-time greedy answer.
        """
        from omnishift.models.generation import eos_token_ids, greedy_generate

        if batch["attention_mask"][:, -1].eq(0).any():
            raise ValueError("generation needs a left-padded batch: call the processor with padding_side='left'")
        prompt = ({"inputs_embeds": self.input_embeddings(batch)} if _has_speech(batch)
                  else {"input_ids": batch["input_ids"]})
        ids = greedy_generate(self.llm, batch["attention_mask"], max_new_tokens,
                              eos_token_ids(self.llm, self.tokenizer), **prompt)
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    @torch.no_grad()  # a generator: no graph may reach the KV cache, which outlives every item
    def generate_stream(self, items: list[dict], slots: int = 16, max_new_tokens: int = 64):
        """Greedy-decode many items with continuous batching; yields answers as they complete.

        Up to ``slots`` items are decoded together and a finished item's slot is refilled with the
        next one (:func:`omnishift.models.generation.continuous_greedy_generate`), so a long answer
        no longer holds a whole batch back. Every answer equals the item's one-at-a-time greedy
        answer (and :meth:`generate`'s).

        Args:
            items: processor items (``prompt``, plus ``audio`` for speech prompts), in the order
                they should enter; sorting them by prompt length wastes less compute on padding.
            slots: most items in flight.
            max_new_tokens: answer length cap.

        Returns:
            An iterator of ``(index into items, decoded answer)`` in order of completion.
        """
        from omnishift.models.generation import continuous_greedy_generate, eos_token_ids

        def prefill(indices: list[int]) -> dict:
            batch = self.processor([items[i] for i in indices], padding_side="left")
            if _has_speech(batch):
                return {"attention_mask": batch["attention_mask"], "inputs_embeds": self.input_embeddings(batch)}
            return {"attention_mask": batch["attention_mask"], "input_ids": batch["input_ids"]}

        for i, ids in continuous_greedy_generate(self.llm, prefill, len(items), slots, max_new_tokens,
                                                 eos_token_ids(self.llm, self.tokenizer)):
            yield i, self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def answer(self, prompts: list[str], audios: list | None = None, max_new_tokens: int = 64) -> list[str]:
        """Convenience: answer a list of prompts (with audio where the prompt has a placeholder)."""
        audios = audios or [None] * len(prompts)
        batch = self.processor([{"prompt": p, "audio": a} for p, a in zip(prompts, audios)], padding_side="left")
        return self.generate(batch, max_new_tokens=max_new_tokens)

    @torch.no_grad()
    def ctc_log_probs(self, states: list[torch.Tensor]):
        """CTC log-probabilities per clip, ``(frames_i / k, 1 + V)`` each (class 0 blank, ``j + 1``
        token ``j``), yielded in order, 32 clips computed at a time: a clip's are 200 kB per 100 ms
        of speech (49k classes), so a dev set's worth held at once would take gigabytes.

        Args:
            states: per clip ``(frames, C)`` encoder states (:meth:`encode_audio` or a feature cache).
        """
        from omnishift.models.adaptor import ctc_logits

        if self.adaptor.ctc_blank is None:
            raise ValueError("this adaptor has no CTC head (model config ctc_head: false): nothing to transcribe")
        table = self.ctc_table()
        for s in range(0, len(states), 32):
            chunk = states[s:s + 32]
            frames = torch.tensor([x.shape[0] for x in chunk])
            padded = torch.zeros(len(chunk), int(frames.max()), chunk[0].shape[1])
            for i, x in enumerate(chunk):
                padded[i, : x.shape[0]] = x.float()
            emb = self.adaptor(padded.to(self.adaptor.linear1.weight.dtype), frames)  # B, T, C -> B, T/k, H
            logits = ctc_logits(emb, table.to(emb.device, emb.dtype), self.adaptor.ctc_blank, log_scale=self.adaptor.ctc_log_scale)
            logp = logits.float().log_softmax(-1)  # B, T/k, 1 + V
            for i, n in enumerate((frames // self.config.k).tolist()):
                yield logp[i, :n]

    def ctc_tokens(self, logp: torch.Tensor) -> list[int]:
        """One clip's token ids read from its CTC log-probabilities ``(T, 1 + V)``: the greedy path
        (repeats merged, blanks dropped), or beam search with the LLM (``config.ctc_decoding``)."""
        if self.beam_settings is None:
            seq = torch.unique_consecutive(logp.argmax(-1)).tolist()
            return [c - 1 for c in seq if c != 0]
        if self._lm_context is None:  # the chat template's user-turn opening and closing, the same for every clip
            self._lm_context = (user_turn_context(self.tokenizer), user_turn_end(self.tokenizer))
        context, end = self._lm_context
        return ctc_beam_search(logp, LLMPrior(self.prior_llm(), context), self.beam_settings, end_token=end)

    def prior_llm(self):
        """The beam decoder's language model: the base LLM ``config.llm``, frozen.

        Why the base and not this model's own LLM: the front end (encoder, adaptor, CTC table,
        decoder) then stays the aligned one while Stage 1 fine-tunes the LLM, so a clip's transcript
        is the same for every method and is decoded once
        (:class:`~omnishift.models.token_cache.CTCTokenCache`).
        """
        if self._prior_llm is None:
            llm, _ = load_llm(self.config.llm, dtype=self.llm.dtype)
            object.__setattr__(self, "_prior_llm", llm.eval().requires_grad_(False))
        return self._prior_llm

    def ctc_table(self) -> torch.Tensor:
        """The CTC head's classifier: the base LLM's token embeddings ``(V, H)``, as in alignment.

        Why not this model's own table: Full-FT and Layer-LR train the (tied) embeddings, which
        would change what the aligned adaptor's CTC path reads; the front end stays the aligned one.
        """
        if self._ctc_table is None:
            object.__setattr__(self, "_ctc_table", self.prior_llm().get_input_embeddings().weight.detach())
        return self._ctc_table

    def use_token_cache(self, root: str | Path | None) -> None:
        """Keep beam-decoded CTC tokens per clip under ``root`` (None: no cache). Greedy reading
        costs ~1 ms a clip and is never cached; beam search with the LLM costs ~2 s."""
        from omnishift.models.token_cache import CTCTokenCache

        if root and self.token_cache is not None and self.token_cache.root == Path(root):
            return  # already attached (its identity hashes the base LLM: ~1 s, not redone per evaluation unit)
        self.token_cache = CTCTokenCache(root, self) if (root and self.beam_settings is not None) else None

    def clip_tokens(self, states_list: list[torch.Tensor],
                    log_probs: list[torch.Tensor] | None = None) -> list[list[int]]:
        """Token ids per clip (:meth:`ctc_tokens`), served from the token cache where it has them.

        Args:
            states_list: per clip ``(frames, C)`` encoder states.
            log_probs: their :meth:`ctc_log_probs`, where the caller already has them (computed here otherwise).
        """
        cache = self.token_cache
        out = [cache.get(s) if cache is not None else None for s in states_list]
        todo = [i for i, t in enumerate(out) if t is None]
        given = None if log_probs is None else [log_probs[i] for i in todo]
        for i, logp in zip(todo, given or self.ctc_log_probs([states_list[i] for i in todo])):
            out[i] = self.ctc_tokens(logp)
            if cache is not None:
                cache.put(states_list[i], out[i])
        return out

    @torch.no_grad()
    def speech_plan(self, clip) -> tuple[torch.Tensor, SpeechPlan]:
        """One clip's encoder states ``(frames, C)`` and the slots its reading plans (the
        processor's :attr:`~omnishift.models.processor.SpeechLLMProcessor.speech_planner`).

        Args:
            clip: raw 16 kHz audio, or its encoder states ``(frames, C)`` (tensor or feature-cache file).
        """
        from omnishift.models.processor import load_states

        if isinstance(clip, (torch.Tensor, str, Path)):
            states = load_states(clip).float()
        else:  # raw samples
            states = self.encode_audio([clip])[0]
        return states, self.reading.plan(self, states)

    @torch.no_grad()
    def speech_vectors(self, clip) -> torch.Tensor:
        """What the LLM reads for one clip: its speech vectors ``(n, H)`` under this model's reading."""
        batch = self.processor([{"prompt": self.config.placeholder, "encoder_states": clip if isinstance(
            clip, (torch.Tensor, str, Path)) else self.encode_audio([clip])[0]}])
        return self.speech_embeddings(batch)

    @torch.no_grad()
    def ctc_transcripts(self, states: list[torch.Tensor]) -> list[str]:
        """What the adaptor hears: the CTC transcript of clips' encoder states (needs ``ctc_head``).

        Args:
            states: per clip ``(frames, C)`` encoder states (:meth:`encode_audio` or a feature cache).

        Returns:
            The decoded text per clip (:meth:`ctc_tokens`: greedy, or beam search with the LLM).
        """
        return [self.tokenizer.decode(t).strip() for t in self.clip_tokens(states)]

    # ---- persistence ---------------------------------------------------------------------
    def save_pretrained(self, path: str | Path, state_dict: dict | None = None, llm_is_base: bool = False) -> Path:
        """Write config, adaptor and LLM (full weights or PEFT adapter) atomically into ``path``.

        Args:
            path: the folder (replaced in one rename).
            state_dict: full ``state_dict()`` of this model to write instead of the module's own
                tensors; FSDP/DeepSpeed training gathers it because their modules hold shards.
            llm_is_base: the LLM is untouched base ``config.llm`` (adaptor alignment): write no LLM
                copy; loading takes the base model (``llm_format: "base"``).
        """
        from peft import PeftModel

        is_peft = isinstance(self.llm, PeftModel)
        if llm_is_base:
            with atomic_dir(path) as tmp:
                meta = {"omnishift_version": 1, "llm_format": "base", **dataclasses.asdict(self.config)}
                atomic_write_text(tmp / CONFIG_NAME, json.dumps(meta, indent=2) + "\n")
                save_file({k: v.detach().contiguous().cpu() for k, v in self.adaptor.state_dict().items()},
                          tmp / ADAPTOR_NAME)
            return Path(path)
        if state_dict is None:
            adaptor_sd, llm_kw = self.adaptor.state_dict(), {}
        else:
            adaptor_sd = {k[len("adaptor."):]: v for k, v in state_dict.items() if k.startswith("adaptor.")}
            llm_kw = {"state_dict": {k[len("llm."):]: v for k, v in state_dict.items() if k.startswith("llm.")}}
        with atomic_dir(path) as tmp:
            meta = {"omnishift_version": 1, "llm_format": "peft" if is_peft else "full", **dataclasses.asdict(self.config)}
            atomic_write_text(tmp / CONFIG_NAME, json.dumps(meta, indent=2) + "\n")
            save_file({k: v.detach().contiguous().cpu() for k, v in adaptor_sd.items()}, tmp / ADAPTOR_NAME)
            sub = tmp / ("llm_adapter" if is_peft else "llm")
            self.llm.save_pretrained(sub, **llm_kw)
            self.tokenizer.save_pretrained(sub)
        return Path(path)

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype=torch.float32, reading: dict | None = None) -> "SpeechLLM":
        """Load a folder written by :meth:`save_pretrained`.

        Args:
            reading: read the speech another way than the folder says (the weights are the same):
                any of ``speech_input``, ``speech_options``, ``ctc_decoding`` (None there: greedy), e.g.
                to compare an aligned adaptor's continuous output with its CTC transcript.
        """
        path = Path(path)
        if not (path / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{path} is not a speech-LLM folder (no {CONFIG_NAME}); train or save one first")
        meta = json.loads((path / CONFIG_NAME).read_text())
        meta.pop("omnishift_version", None)
        fmt = meta.pop("llm_format")
        meta.update(_reading_overrides(reading))
        config = SpeechLLMConfig.from_dict(meta)
        if fmt == "full":
            llm, tok = load_llm(path / "llm", dtype=dtype)
        elif fmt == "base":
            llm, tok = load_llm(config.llm, dtype=dtype)
        elif fmt == "peft":
            from peft import PeftModel

            base, tok = load_llm(config.llm, dtype=dtype)
            llm = PeftModel.from_pretrained(base, str(path / "llm_adapter"))
        else:
            raise ValueError(f"{path / CONFIG_NAME}: llm_format {fmt!r} unknown (expected 'full', 'peft' or 'base')")
        encoder, fe = load_encoder(config.encoder, dtype=dtype)
        model = cls(config, llm, tok, encoder, fe, llm_is_base=fmt == "base")
        model.adaptor.load_state_dict(load_file(path / ADAPTOR_NAME))
        model.adaptor.to(dtype)
        return model.eval()


READING_KEYS = ("speech_input", "speech_options", "ctc_decoding")


def _reading_overrides(reading: dict | None) -> dict:
    """``reading`` checked against the config fields a loaded folder may be read with."""
    unknown = sorted(set(reading or {}) - set(READING_KEYS))
    if unknown:
        raise ValueError(f"reading overrides {unknown} unknown: a folder may be read with other {list(READING_KEYS)}")
    return dict(reading or {})


def load_speech_llm(path: str | Path | None = None, reading: dict | None = None, **config) -> SpeechLLM:
    """A saved speech-LLM folder, or (``path=None``) the configured base models with a fresh adaptor;
    ``reading``: how the speech is read, if not as the folder (or config) says."""
    if path:
        return SpeechLLM.from_pretrained(path, reading=reading)
    return SpeechLLM.from_config(SpeechLLMConfig(**config, **_reading_overrides(reading)))
