"""DeepSpeed entry point: ``deepspeed --num_gpus N fastxlt/train.py --config X.yaml``.

Every rank runs the same plan of phases; the launcher provides RANK / WORLD_SIZE / MASTER_ADDR, the
ZeRO stage and precision come from the config's ``deepspeed`` section. Without CUDA (this repository's
CI), ``DS_ACCELERATOR=cpu`` and gloo make the same code run N CPU ranks.
"""

from __future__ import annotations

import argparse
import sys

if __package__ in (None, ""):  # launched as a script by the deepspeed launcher
    import pathlib

    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # the repository root, not fastxlt/


def main(argv: list[str] | None = None) -> int:
    from fastxlt.cli import _add_config_arguments, _dispatch, cmd_train

    parser = argparse.ArgumentParser(prog="fastxlt/train.py", description=__doc__.splitlines()[0])
    _add_config_arguments(parser)
    parser.add_argument("--no-eval", action="store_true", help="skip zero-shot evaluation after training")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return _dispatch(cmd_train, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
