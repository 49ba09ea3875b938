"""What the stages of ``omnishift run`` share: the config, the run folder, progress, the base
model (loaded once), and the one way a stage decides whether a unit on disk may be reused.

Every unit a stage computes (a scored modality, a trained method, an evaluated model x benchmark
x mode, a listening check, a transcript set) goes through :meth:`Context.reuse` with the content
fingerprints of what makes it (:mod:`omnishift.reuse`): reused when they match and it is complete,
resumed when they match and it is not, redone when they differ and the stage is being redone
(``--redo STAGE``), refused with what changed otherwise.
"""

from __future__ import annotations

from pathlib import Path

from omnishift.fingerprint import fingerprint
from omnishift.reuse import content_sha256, reuse_unit
from omnishift.runs import read_marker


class Context:
    """Args:
        cfg, run_dir, progress: the experiment, its folder and its :class:`Progress`.
        shard: ``(i, n)``: this process runs only units ``u`` with ``u % n == i`` of a stage with
            independent units (train, evaluate), so n processes (single-threaded each, or on n
            machines sharing the folder) split the stage; None: every unit.
        redo: the stages being redone: their units made from other inputs are emptied and redone.
    """

    def __init__(self, cfg, run_dir: Path, progress, shard: tuple[int, int] | None = None, redo=()):
        self.cfg, self.run_dir, self.progress, self.shard = cfg, Path(run_dir), progress, shard
        self.redo, self.stage = set(redo), None
        self._base = None

    def mine(self, unit: int) -> bool:
        """Whether unit ``unit`` (0-based, in the stage's fixed order) belongs to this process."""
        return self.shard is None or unit % self.shard[1] == self.shard[0]

    def dir(self, stage: str) -> Path:
        return self.run_dir / stage

    def require(self, stage: str, what: str) -> Path:
        """The folder of a finished ``stage`` (raises naming the stage to run first)."""
        if read_marker(self.run_dir, stage) is None:
            raise ValueError(f"{what} needs the outputs of stage {stage!r}, which has not finished in "
                             f"{self.run_dir}: add it to `stages` (or drop `stages` to run everything)")
        return self.dir(stage)

    # ---- reuse -----------------------------------------------------------------------------
    def reuse(self, folder: Path, inputs: dict, what: str, complete) -> bool:
        """True: ``folder`` holds this unit, complete, made from ``inputs``; False: compute it
        (:func:`omnishift.reuse.reuse_unit`, redoing only under ``--redo`` of the current stage)."""
        return reuse_unit(folder, inputs, what=what, redo=self.stage in self.redo, complete=complete,
                          fix=f"rerun with --redo {self.stage} to redo it, or give the run a new name=")

    def model_fp(self, folder: Path | None) -> dict:
        """Content fingerprint of a saved speech-LLM folder, or (None) of the experiment's base model."""
        from omnishift.models.identity import config_fingerprint, folder_fingerprint

        return config_fingerprint(self.cfg.model) if folder is None else folder_fingerprint(folder)

    def data_fp(self, *parts: str) -> str:
        """Content fingerprint of files or folders of the data stage (``"train"``, ``"bench/web.jsonl"``)."""
        d = self.require("data", "this stage")
        return fingerprint([content_sha256(d / p) for p in parts])

    def bench_fp(self, name: str) -> str:
        """A benchmark's manifest and its synthesized audio, by content."""
        parts = [f"bench/{name}.jsonl"] + ([f"bench/{name}"] if (self.dir("data") / "bench" / name).is_dir() else [])
        return self.data_fp(*parts)

    # ---- shared inputs -----------------------------------------------------------------------
    def base_model(self):
        if self._base is None:
            from omnishift.models.speech_llm import SpeechLLM

            self._base = SpeechLLM.from_config(self.cfg.model)
        return self._base

    @property
    def train_manifest(self) -> Path:
        return self.require("data", "this stage") / "train" / "manifest.jsonl"

    def heldout_manifest(self) -> Path:
        d = self.require("data", "deactivation") / "heldout" / "manifest.jsonl"
        return d if d.is_file() else self.train_manifest

    def benchmarks(self) -> dict[str, Path]:
        d = self.require("data", "evaluation") / "bench"
        return {name: d / f"{name}.jsonl" for name in self.cfg.evaluate.benchmarks}

    def text_scores(self, what: str) -> Path:
        d = self.require("importance", what) / "base" / "text"
        if not (d / "modules.csv").is_file():
            raise ValueError(f"{what} needs TEXT importance of the base model: add 'text' to importance.modalities")
        return d

    def artifact(self, kind: str, what: str) -> Path:
        """An input a training method's record asks for (:attr:`omnishift.train.methods.Method.inputs`),
        made by an earlier stage; ``what`` names the consumer in errors."""
        if kind == "layer_lr_coefficients":
            return self.require("importance", what) / "layer_lr.json"
        if kind == "text_scores":
            return self.text_scores(what)
        raise ValueError(f"{what} asks for pipeline input {kind!r}; known: layer_lr_coefficients, text_scores")

    def method_name(self, label: str) -> str:
        import yaml

        cfg = yaml.safe_load((self.dir("train") / label / "config.yaml").read_text(encoding="utf-8"))
        return cfg["method"]["name"]

    def trained(self, label: str) -> bool:
        """Whether method ``label`` has finished training (``final/`` is written in one rename)."""
        return (self.dir("train") / label / "final").is_dir()

    def aligned(self) -> Path | None:
        """The aligned speech LLM of the ``align`` stage, or None when alignment is off."""
        if self.cfg.align.recipe is None:
            return None
        f = self.require("align", "training from the aligned adaptor") / "final"
        if not f.is_dir():
            raise ValueError(f"{f} missing: stage align did not finish; run it again")
        return f

    def final(self, label: str) -> Path:
        f = self.dir("train") / label / "final"
        if f.is_dir():  # a finished method is usable while other methods still train (sharded runs)
            return f
        self.require("train", f"model {label!r}")
        raise ValueError(f"{f} missing: stage train did not finish method {label!r}")
