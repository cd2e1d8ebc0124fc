"""fanbu.feedback.shared."""
