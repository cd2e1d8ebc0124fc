"""The promotion gate: score candidates against the champion, decide, promote or roll back; the
report's PGR and forgetting numbers."""
