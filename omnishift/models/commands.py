"""``omnishift models prepare``: unpack the embedded default models (SmolLM2, Whisper tiny.en)."""

from __future__ import annotations

import json


def cmd_models(args) -> int:
    from omnishift.models.defaults import prepare_default_models

    print(json.dumps(prepare_default_models(force=args.force), indent=2))
    return 0


def register(commands) -> None:
    models = commands.group("models", help="the embedded default models (SmolLM2, Whisper tiny.en)")
    s = models.add_parser("prepare", help="convert the wheel-shipped models into HF folders (also done on first use)")
    s.add_argument("--force", action="store_true", help="rebuild even if already prepared")
    s.set_defaults(func=cmd_models)
