"""Everything checked before a sweep runs (sweep), the resolved search space (space), what a result
depends on (fingerprint), the sampler and pruner (samplers), the base model resolved against the
provider's list (models)."""
