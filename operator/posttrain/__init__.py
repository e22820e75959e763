"""posttrain: the WizardLM-2 post-training recipe as Kubernetes resources."""
