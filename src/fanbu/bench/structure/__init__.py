"""``fanbu bench structure``: hierarchical transfer over a domain tree, and causal-rule transfer, one module per section."""
