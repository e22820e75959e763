"""`python -m posttrain.local.serve MODEL PORT [ENGINE ARGS...]`: become the model server of a folder.

The local runner starts each model server as this small process. It asks the trainer's serving
module (`posttrain_trainer.serving`: vLLM with a GPU when installed, `transformers serve` otherwise,
the program a `posttrain-server.json` in the folder names)
for the command line and replaces itself with it (exec), so the pid the runner recorded is the
server's own. Keeping it a separate process keeps the ML stack out of the runner (and the operator's
CLI), as the import contracts require.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Exec the model server for `MODEL PORT [ENGINE ARGS...]`; returns 2 on a usage error."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print("usage: python -m posttrain.local.serve MODEL PORT [ENGINE ARGS...]", file=sys.stderr)
        return 2
    model, port, *engine_args = args
    from posttrain_trainer.serving import choose_engine, program_module, server_command

    engine = "program" if program_module(model) else choose_engine()
    command = server_command(engine, model, int(port), extra_args=engine_args)
    print("$ " + " ".join(command), flush=True)
    os.execv(command[0], command)
    return 1  # not reached: exec replaces this process


if __name__ == "__main__":
    sys.exit(main())
