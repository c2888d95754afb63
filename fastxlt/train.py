"""DeepSpeed entry point: ``deepspeed --num_gpus N fastxlt/train.py --config X.yaml``.

Every rank runs the same plan of phases; the launcher provides RANK / WORLD_SIZE / MASTER_ADDR, the
ZeRO stage and precision come from the config's ``deepspeed`` section. Without CUDA (this repository's
CI), ``DS_ACCELERATOR=cpu`` and gloo make the same code run N CPU ranks.
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):  # launched as a script by the deepspeed launcher
    import pathlib

    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # the repository root, not fastxlt/


def main(argv: list[str] | None = None) -> int:
    from fastxlt.cli import train_main  # its options live with every other command line's

    return train_main(argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
