"""fanbu.train.distill."""
