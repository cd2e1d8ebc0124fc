"""fanbu.feedback.strategies."""
