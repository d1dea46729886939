"""Pure functions that return the Kubernetes objects the operator creates (no I/O)."""
