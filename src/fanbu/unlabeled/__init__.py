"""Learning from unlabeled and synthetic data: self-supervised adaptation, domain adaptation, generative augmentation."""
