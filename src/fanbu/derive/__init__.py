"""Derive (脱胎): small domain models from the large model by pruning, distillation, fine-tuning and quantisation."""
