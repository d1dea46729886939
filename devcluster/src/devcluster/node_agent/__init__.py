"""A process-based node agent for the devcluster: a kubelet that runs containers as processes.

Kept free of imports: `container_init` lives in this package and starts every container.
"""
