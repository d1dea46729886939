"""The ModelOptimization API (driftwarden.io/v1alpha1): spec and status models, conditions,
durations, and the mapping of spec to the Job contract. crds/modeloptimization.yaml is the
source of truth; these models agree with it (tests check that)."""
