"""``omnishift models prepare``: unpack the embedded default models (SmolLM2, Whisper tiny.en)."""

from __future__ import annotations

import json


def cmd_models(args) -> int:
    from omnishift.models.defaults import prepare_default_models

    if args.action == "prepare":
        print(json.dumps(prepare_default_models(force=args.force), indent=2))
    return 0


def register(sub) -> None:
    s = sub.add_parser("models", help="prepare the embedded default models (SmolLM2, Whisper tiny.en)")
    s.add_argument("action", choices=["prepare"])
    s.add_argument("--force", action="store_true", help="rebuild even if already prepared")
    s.set_defaults(func=cmd_models)
