"""The operator's logic: planning, launching and following runs, recording them in status.

Handlers call these; these call builders (pure) and driftwarden.k8s (API I/O).
"""
