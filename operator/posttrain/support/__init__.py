"""Small helpers below every other layer: process groups, free ports, readiness probes and timestamps.

Both the operator and the trainer import them, so they depend on the standard library only (no kopf,
no Kubernetes client, no ML stack); an import-linter contract keeps it that way.
"""
