"""Per-domain re-rankers: features, model, Lightning training, train()."""
