"""What every workload shares: artifact storage, result/progress documents, the chat schema."""
