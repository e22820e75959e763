"""kopf glue: watch the resources and their children, and reconcile each resource through the plan."""
