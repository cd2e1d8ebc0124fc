"""Distillation parts both movements use: loss terms, the forward pass that captures what they
compare, attention relations, and the teacher's outputs (cached once, or live)."""
