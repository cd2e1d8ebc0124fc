"""fanbu.feedback.gate."""
