"""Adapters: the only code that talks to the Kubernetes API, the artifact store and Prometheus."""
