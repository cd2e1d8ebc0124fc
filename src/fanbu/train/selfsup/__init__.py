"""Self-supervised objectives and continued pretraining on unlabeled text (MLM, SimCSE)."""

from fanbu.train.selfsup.pretrain import SSLConfig, SSLResult, continue_pretraining, pool_texts

__all__ = ["SSLConfig", "SSLResult", "continue_pretraining", "pool_texts"]
