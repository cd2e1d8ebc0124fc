"""``fanbu bench lm`` and ``fanbu bench derive --lm``: the causal-LM loop's benchmark, one module per section."""
