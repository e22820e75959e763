"""`posttrain-trainer <data|evol|align|reward|train> --config FILE`: what the workload pods run.

Each workload package exposes `run(config: WorkloadConfig) -> Result`, found by name in `WORKLOADS`
(imported only when it runs: the data workload need not load the learning stack). A failure exits
non-zero and leaves its reason in the termination message, so the operator can report it in status;
invalid input or config exits with a code of its own and is not retried (`common.failures`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

from posttrain.api.resources import Workload
from posttrain.api.workload import Result, WorkloadConfig

Runner = Callable[[WorkloadConfig], Result]


def _data() -> Runner:
    from posttrain_trainer import data

    return data.run


def _evol() -> Runner:
    from posttrain_trainer import evol

    return evol.run


def _align() -> Runner:
    from posttrain_trainer import align

    return align.run


def _reward() -> Runner:
    from posttrain_trainer import reward

    return reward.run


def _train() -> Runner:
    from posttrain_trainer import train

    return train.run


WORKLOADS: dict[Workload, Callable[[], Runner]] = {
    "data": _data,
    "evol": _evol,
    "align": _align,
    "reward": _reward,
    "train": _train,
}
"""Workload name -> a loader of its `run`."""


def main(argv: list[str] | None = None) -> int:
    """Run the `posttrain-trainer` command line with `argv` and return its exit status."""
    parser = argparse.ArgumentParser(prog="posttrain-trainer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in WORKLOADS:
        p = sub.add_parser(name, help=f"run the {name} workload")
        p.add_argument("--config", required=True, help="workload config file (YAML or JSON)")
    p = sub.add_parser("make-tiny-model", help="write a tiny random Llama with a BPE tokenizer")
    p.add_argument("path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.command == "make-tiny-model":
        from posttrain_trainer.common.tiny import make_tiny_model

        print(make_tiny_model(args.path, seed=args.seed, hidden_size=args.hidden_size, layers=args.layers))
        return 0

    from posttrain_trainer.config import load_config

    try:
        config = load_config(args.config)
        if config.workload != args.command:
            raise ValueError(f"config is for the {config.workload!r} workload, not {args.command!r}")
        result = WORKLOADS[config.workload]()(config)
        # One write per line: processes under torchrun share stdout, and unbuffered (PYTHONUNBUFFERED,
        # as in the pods) print() writes the text and its newline separately, so lines could interleave.
        sys.stdout.write(json.dumps(result.wire(), sort_keys=True) + "\n")
        sys.stdout.flush()
        return 0
    except Exception as error:  # the reason must reach the operator, whatever it is
        from posttrain_trainer.common.failures import report_failure

        return report_failure(error)


if __name__ == "__main__":
    sys.exit(main())
