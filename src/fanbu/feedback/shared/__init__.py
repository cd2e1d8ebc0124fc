"""What the feedback strategies share: the run's context, soft targets, expert selection, the
continual safeguards, replay batches, the fit into the one loop, and plain-weight preparation."""
