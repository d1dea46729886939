"""The closed loop's decisions, as pure functions: no clock, no API, no I/O.

triggers        whether to start an optimization run, and why (or what blocks it)
schedule        when the next evaluation Job is due
gates           whether a candidate may replace the model in use
promotion       promotion / rollback intents and the rollback decision
temporary_fix   raised resources while the latency SLO is breached, and their exact revert
deployment_apply  the one server-side-apply configuration that carries all of the above
ownership       releasing SSA ownership of restored fields
quantity        Kubernetes quantities in Decimal
"""
