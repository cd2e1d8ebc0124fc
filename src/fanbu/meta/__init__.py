"""Fast adaptation learned from the swarm: meta-learned initialisation, meta decision forests, search across domains."""
