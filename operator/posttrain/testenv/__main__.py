"""``python -m posttrain.testenv up|down|env`` (the same as ``posttrain dev-cluster``)."""

import sys

from posttrain.testenv.cli import main

sys.exit(main(prog="python -m posttrain.testenv"))
