"""``omnishift train CONFIG``: Stage-1 speech training of one method (resumable; ``accelerate launch`` for
several processes)."""

from __future__ import annotations


def cmd_train(args) -> int:
    from omnishift.train.config import load_config
    from omnishift.train.trainer import train

    print(train(load_config(args.config, args.overrides), resume=args.resume))
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        # under `accelerate launch`: tear the process group down before the interpreter exits, or a
        # rank can abort in gloo's thread teardown ("terminate called without an active exception",
        # seen on a loaded 2-core machine) after the run has finished and saved
        tdist.barrier()
        tdist.destroy_process_group()
    return 0


def register(commands) -> None:
    from omnishift.train.methods import METHODS

    s = commands.add_parser("train", help=f"Stage-1 speech training ({', '.join(METHODS)})")
    s.add_argument("config", help="YAML config, e.g. configs/default/lora.yaml")
    s.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=1e-4 loop.max_steps=10")
    s.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    s.set_defaults(func=cmd_train)
