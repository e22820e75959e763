"""posttrain-trainer: the workloads that run inside the pods."""
