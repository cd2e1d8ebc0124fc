"""``fanbu bench loop``: the whole loop, with the small models as the swarm, generation after generation.

A simulated deployment on the default benchmark (the five 20 Newsgroups domains feed back; BBC News and
Reuters R8 are held out). Large v0 is MiniLM trained on the public slices of every task (kept in the
work directory, fingerprinted). Each generation, from the current champion:

1. **derive** a small int8 model per domain (Taylor prune -> distil -> quantise; the champion teaches);
2. **serve** them behind a cascade through a real ``fanbu serve`` process to each domain's traffic: a
   fresh block of its private texts that no model trained on (never a test text); a ``corrections``
   share (0.1) of the answers gets its true label through ``/v1/feedback``;
3. **collect** the generation's logs into a dataset and **adapt** each small model on it;
4. **feed back** the adapted swarm through every mechanism, each a candidate large model:

   * ``combined``: the cycle's default, ``swarm_distill`` with each domain's small model teaching its
     head, the collected dataset joining the data (``data.collected``);
   * ``data``: mechanism 1 alone, the collected data without teachers. The issue suggested
     ``multitask`` or ``sequential``, but both learn from the teachers' labels, which would mix
     mechanism 2 in; ``swarm_distill`` with ``alpha: 0`` switches the teachers' term off and keeps the
     same loop, safeguards (LwF) and budget as the distill rows, so the candidate learns the hard labels
     of the public slices and the collected dataset (corrections, confident answers, escalations the
     champion labelled) and nothing else;
   * ``distill``: ``swarm_distill`` from the adapted small models, without the collected data (its
     context carries the public slices only), so ``combined - distill`` is what the data adds;
   * ``layer_lr``: the combined default with ``layer_lr: swarm``;
   * ``transplant``: each student's weight change placed back where it was cut from (task arithmetic,
     no training step);
   * ``structure``: ``swarm_structure``, the champion cut to the vocabulary the students kept;

5. **gate** every candidate on the gate splits; the best that passes is promoted and the next
   generation starts from it. The first generation also runs the combined default on **full-size
   experts** (``experts.source: finetune``, the champion fine-tuned on the same private examples, the
   same collected data) for comparison: gated and scored, never promoted.

``pgr_small`` = (candidate - champion) / (adapted small model - champion) per domain on the test split,
averaged over the domains where the denominator is positive; a domain where the candidate ends above its
small teacher (PGR > 1, weak-to-strong) is listed. Forgetting: the mean drop on the held-out tasks, in
points. The test splits are the report only: selection (expert selection, early stopping) reads the
validation part, every decision (the gate, which mechanism is best) the gate split, and every
generation records ``decision_split: gate``.

**Bytes from the domains** (``bytes_from_domains``), what each mechanism moves to the centre:

* distill, combined, layer_lr: the small models' logits on the transfer texts, ``n_texts x n_classes x 4``
  per domain (the texts with a soft target), plus for layer_lr each student's layer importances
  (``n_layers x 4``);
* data, combined, layer_lr: the collected dataset, its UTF-8 texts plus a 4-byte label per labelled row;
* transplant: each student's fp32 weights (its change since the cut has the same shape), ``params x 4``;
* structure: the units each student kept on the cut axes, 4 bytes (an int32 index) each;
* the full-size swarm: every full-size expert's fp32 weights, plus the collected dataset.

Targets (``target.{name: {value, bar, met, interval, rule}}``), read off the measured figures:
``small_adapt_gain`` (mean after - before adapt >= 0.02), ``best_pgr_small`` (the gate's choice per
generation: pgr_small >= 0.9 with forgetting <= 1 point), ``transplant_pgr`` (>= 0.3, passing the gate),
``optimisation_helps`` (layer_lr or structure beats the default's PGR, or structure passes the gate
with fewer parameters), ``compounding`` (generation 2's champion beats generation 1's on the mean of
domains, no held-out task down by more than a point, generation 2's re-derived small models start at
least as high), ``bytes_ratio`` (combined / full-size <= 1/20) and, with ``--quick``, ``quick_seconds``
(<= 1800). ``--seeds N`` repeats the whole draw; every figure is then a mean with a 90% t-interval
(:mod:`fanbu.bench.stats`) and the targets are read on the means.
"""

from fanbu.bench.loop.run import run_bench

__all__ = ["run_bench"]
