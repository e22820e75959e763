"""The plan layer: pure decisions of the operator and the local runner. No I/O."""
