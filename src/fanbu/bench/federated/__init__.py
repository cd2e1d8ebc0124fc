"""``fanbu bench federated``: federated 反哺 on Flower against centralised training, attacks, and scale.

Large v0 is the packaged MiniLM trained on the public slices of the 20 Newsgroups domains. Every
federated run goes through Flower's simulation runtime (:func:`fanbu.federated.run.federate`, the
same ServerApp and ClientApp a deployment runs) and is scored on the domains' test splits:

* **central vs federated**: large v0 fine-tuned on the pooled private data of every client (one
  process, ``rounds`` epochs) against FedAvg with one client per domain and with a Dirichlet non-IID
  split into more clients (the same data, ``rounds`` rounds of one local epoch). Each side picks its
  step size on the validation slices (central: one of three learning rates; FedAvg: a server learning
  rate of 1 or 2 on the aggregate), and both end with the same head phase: the encoder frozen, each
  domain head trained on its private data (FedAvg: the recipe's head round). Plain FedAvg (no server
  step, no head round) and the Dirichlet split (the chosen server lr, no head round) are reported
  next to them.
* **mutual transfer (FedMKT)**: each domain's client holds a small student (large v0 pruned, then
  trained on that client's private data); only logits on the public texts travel. The clients' mean
  test accuracy before and after, and the local-only control: the same clients trained alone with the
  same steps. The target is beating that control (``clients_beat_local``), not only their start.
* **attacks**: 20% malicious clients on the Dirichlet split over several rounds, every rule of the
  grid (FedAvg, trimmed mean, median, Krum, Multi-Krum, Bulyan) against every attack, each against the
  same rule's clean run; garbage logits against FedMKT's mean and median. The attacks' strengths are
  settings (``caps()["attacks"]``). An attack that costs undefended FedAvg under 5 points is reported
  as "no effect": it tests nothing, so no rule can be said to hold it. The target names ONE default
  rule (:data:`DEFAULT_RULE`), which must hold every attack within 5 points.
* **scale**: 100 simulated clients (LoRA sharing), seconds per round and peak memory (the summed
  resident memory of this process and the simulation's processes); seed 0 only.

``--seeds N`` runs the bench for seeds 0..N-1 (training, the Dirichlet split and the choice of the
attackers; the data slices and the test split stay those of seed 0) and reports the mean and a 90%
t-interval over seeds of each headline figure (:mod:`fanbu.bench.stats`); each target is judged on the
mean and reported as ``target.{name: {value, bar, met, interval, rule}}``.

Finished parts and models are kept in the work directory (``--work``) with a fingerprint of their
settings and of fanbu's code: a rerun reads a part back only when both are unchanged. Each cell of the
grid is a part of its own, although every rule of one attack runs in one simulation (below).

**How the attack grid runs** (:mod:`fanbu.bench.federated.grid`). A cell run as a simulation of its own
paid Flower's start-up (Ray, and two workers importing torch, transformers and fanbu: about 40 s on a
busy 2-core machine) 24 times, and trained the 15 clients' round 1 from the same large v0 six times per
attack. Now each attack (and the clean run) is one simulation in which the server runs every rule's
federation, two at a time (one aggregates while the other's clients train), each from large v0 with its
own global model and fanbu's own server loop, so each rule's dynamics are exactly those of a run of its
own (no rule sees another's updates). The clients are fanbu's ClientApp with the attack's recipe; round
1, whose messages are the same for every rule, is trained once and its answers replayed to the other
rules (a client is a deterministic function of its node and the message). Tests check both against
separate runs, in this process and under Flower's runtime: each rule's final model is the same to the
last bit (the server aggregates the replies in client order, not in the order they arrive). The
per-domain FedAvg runs at server learning rates 1 and 2 share a simulation the same way (only the server
reads its learning rate).

**Quick mode** (``--quick``) is sized for well under an hour on 2 cores (the estimate is below). Profile
of one grid cell at the former quick sizes (128 tokens, 150 private texts per domain cut into 15
clients, 50 validation texts, 3 rounds, 500 test texts per domain; about 5 minutes): the clients' local
training about half (0.27
CPU-s per text), their evaluation on the validation slice before and after every round about a quarter
(0.07 CPU-s per text), Flower's start-up about 40 s, scoring the test split about a minute, and the
server's robust aggregation of MiniLM's 22.7M parameters over 15 replies, per round in CPU-s: FedAvg 1,
trimmed mean 9, median 8, Krum 8, Multi-Krum 7, Bulyan 12 (which, once the clients' work shrinks, is
the largest share of the grid). What quick mode changes:

* 64 tokens instead of 128 (training and evaluation cost about half); the full bench keeps 128;
* smaller slices: 100 public, 100 private and 50 validation texts per domain for large v0, the
  centralised runs, FedAvg and FedMKT, scored on 300 test texts per domain; the grid: 60 private texts
  per domain (12 per client on average), 10 validation texts per domain (history only, no decision),
  30 public texts per domain in FedMKT's garbage-logit runs, each cell scored on the same 200 test
  texts per domain (the full bench: the whole test split);
* the grid runs 2 rounds instead of 3, with label flips boosted 30x and model replacement 45x (the
  full bench: 10x and the number of clients): with one local step a client a round, the attackers'
  updates at the full strengths cost FedAvg under 3 points in 2 rounds, an attack that tests nothing.
  Measured at these sizes (:data:`~fanbu.bench.federated.config.QUICK_ATTACK_STRENGTHS`), every attack
  costs FedAvg over 5 points while the default rule loses at most 2.7.

What quick mode keeps: the full-parameter exchange of the full bench (every MiniLM weight; a LoRA-only
grid was tried and dropped: label flips and model replacement did not bite it), 15 clients with 3
attackers (20%, and Bulyan's 4f + 3), every rule against every attack, the same rules' settings, the
default rule judged, FedMKT's clients against the local-only control with the same steps.

Estimated quick total on an idle 2-core machine: about 40 minutes (30 to 50), from unit costs measured on
a busy one (MiniLM at 64 tokens, one thread: 0.05 CPU-s per training text plus about 1 CPU-s per local
training, 0.019 CPU-s per scored text; one round's aggregation of 15 replies 1, 10, 10, 8, 7 and 12 CPU-s
for the six rules) and the work the code does (counted by the end-to-end test on tiny models): the
attack grid about 18 minutes (4 simulations of 105 client trainings and 94 CPU-s of aggregation each,
6 x 600 test texts scored after each), the FedMKT garbage-logit runs about 7 (4 simulations, Ray's
start-up a large share), FedAvg about 5 (4 runs, 3 simulations), the centralised runs, FedMKT and scale
about 2.5 each, large v0 under 1.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from fanbu.bench.federated.config import (
    ATTACK_STRENGTHS,
    ATTACKS,
    BASELINE_RULE,
    BROKEN,
    CENTRAL_LRS,
    DEFAULT_RULE,
    FRACTION,
    HEAD,
    HELD,
    LARGE,
    LR,
    MKT_RULES,
    MODEL_CODE,
    NO_EFFECT,
    RESULT_CODE,
    RULES,
    SERVER_LRS,
    STUDENT_CODE,
    TARGET_ATTACK_POINTS,
    TARGET_RATIO,
    caps,
)
from fanbu.bench.federated.grid import ReplayGrid, federate_together
from fanbu.bench.federated.memory import PeakMemory
from fanbu.bench.federated.parts import Bench
from fanbu.bench.federated.report import (
    HEADLINE,
    attack_grid,
    baseline_of,
    figures,
    is_default,
    print_table,
    summarise,
    target,
    targets,
)
from fanbu.io import atomic_write_json

__all__ = [
    "ATTACKS",
    "ATTACK_STRENGTHS",
    "BASELINE_RULE",
    "BROKEN",
    "CENTRAL_LRS",
    "DEFAULT_RULE",
    "FRACTION",
    "HEAD",
    "HEADLINE",
    "HELD",
    "LARGE",
    "LR",
    "MKT_RULES",
    "MODEL_CODE",
    "NO_EFFECT",
    "RESULT_CODE",
    "RULES",
    "SERVER_LRS",
    "STUDENT_CODE",
    "TARGET_ATTACK_POINTS",
    "TARGET_RATIO",
    "Bench",
    "PeakMemory",
    "ReplayGrid",
    "attack_grid",
    "baseline_of",
    "caps",
    "federate_together",
    "figures",
    "is_default",
    "print_table",
    "run_bench",
    "run_seed",
    "summarise",
    "target",
    "targets",
]


def run_seed(bench: Bench) -> dict[str, Any]:
    """Every per-seed part of the bench (cached in its work directory): the raw results of one seed."""
    bench.check_grid()
    v0 = bench.cached("large-v0", lambda: bench.score(bench.large_v0()))
    attacks = bench.grid()
    central = bench.central()
    fed = bench.fedavg_runs()
    mkt = bench.mkt()
    return {"seed": bench.seed, "v0": v0, "central": central, "fed": fed, "mkt": mkt, "attacks": attacks}


def run_bench(
    quick: bool, out: Path, console: Console, work: Path | None = None, seeds: int = 1
) -> dict[str, Any]:
    """Every part of the bench for seeds 0..``seeds``-1 (cached in ``work``), the JSON written to
    ``out``, the table printed. The scale part runs once (seed 0): it measures time and memory."""
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    started = time.perf_counter()
    work = work or Path(tempfile.mkdtemp(prefix="fanbu-bench-federated-"))
    first = Bench(quick, work, console, seed=0)
    runs = [run_seed(first if seed == 0 else Bench(quick, work, console, seed=seed)) for seed in range(seeds)]
    scale = first.scale()
    report = summarise(first, quick, out, runs, scale, time.perf_counter() - started)
    atomic_write_json(out, report)
    print_table(report, console)
    return report
