"""The federated bench's constants and sizes: rules, attacks and their strengths, step sizes, caps."""

from __future__ import annotations

import copy
from typing import Any

LARGE = "package:all-MiniLM-L6-v2"
FRACTION = 0.2
ATTACKS = ["label_flip", "sign_flip", "scaled_replacement"]  # on shared parameters (FedAvg family)
RULES = ["fedavg", "trimmed_mean", "median", "krum", "multikrum", "bulyan"]
MKT_RULES = ["fedavg", "median"]  # aggregation of the clients' logits under garbage_logits
# The robust rule a deployment is told to switch on, and the one the target judges. RobustConfig's own
# default is fedavg (no defence), so the bench names its own: the coordinate-wise median needs only
# 2f + 1 clients and no setting of its own, and its breakdown point does not depend on the attack's scale.
DEFAULT_RULE = "median"
BASELINE_RULE = "fedavg"  # undefended: an attack that does not cost it 5 points tests nothing
TARGET_RATIO, TARGET_ATTACK_POINTS = 0.97, 5.0
NO_EFFECT, HELD, BROKEN = "no effect", "held", "broken"
# Attack strengths, on top of 20% attackers over the grid's rounds (settings of the recipe's ``attack``):
# * sign_flip: the flipped update boosted 10x. With 20% attackers FedAvg's step is
#   (0.8 - 0.2 * scale) times the honest one, reversed for any scale > 4; 10 makes it -1.2x every round.
# * scaled_replacement: scale null = the number of clients (Bagdasaryan et al.'s model replacement).
# * label_flip: every label of a malicious client changed, and its update boosted 10x (explicit
#   boosting, Bhagoji et al. 2019): unboosted, 3 flippers among 15 clients were averaged away (0.754 vs
#   clean 0.753 in the earlier quick run).
# * garbage_logits: random logits of standard deviation 100.
ATTACK_STRENGTHS: dict[str, dict[str, Any]] = {
    "label_flip": {"scale": 10.0},
    "sign_flip": {"scale": 10.0},
    "scaled_replacement": {"scale": None},
    "garbage_logits": {"logit_magnitude": 100.0},
}
# Quick mode's grid runs 2 rounds in which each client (12 private texts on average) takes one local
# step, so an attacker's update is small: at the strengths above, label flips cost FedAvg 2.2 points and
# model replacement 2.5 ("no effect"). Boosted harder they bite, while the default rule still holds.
# Measured at the quick sizes (seed 0, 2 rounds, 600 test texts), drop of FedAvg / of the median:
# label_flip x10 2.2 / 1.8, x20 5.0 / 1.8, x30 10.5 / 1.8; scaled_replacement x15 (n) 2.5 / 0.0, x30
# 5.3 / 0.0, x45 10.8 / 0.0; sign_flip x10 7.2 / 2.7. The full bench keeps ATTACK_STRENGTHS.
QUICK_ATTACK_STRENGTHS: dict[str, dict[str, Any]] = {
    **ATTACK_STRENGTHS,
    "label_flip": {"scale": 30.0},
    "scaled_replacement": {"scale": 45.0},  # 3x the 15 clients
}
LR = 5e-5
# Each side gets three step sizes, chosen on the validation slices: the centralised run's learning
# rate, and FedAvg's server learning rate on the aggregate (FedAvgM without momentum), which undoes the
# dilution of each client's update by the number of clients. The same local learning rate LR throughout.
CENTRAL_LRS = [5e-5, 1e-4, 1.5e-4]
SERVER_LRS = [1.0, 2.0]
# Both sides end with the same head phase: the encoder frozen, each domain head trained on its private
# data (FedAvg: the recipe's head_round, one more round in which clients train only their heads).
HEAD: dict[str, Any] = {"epochs": 3, "batch_size": 16, "lr": 1e-3, "restore_best": False, "progress": False}
# The code a kept part depends on: a change of it makes the part again. Large v0 and the students are
# data, models, training and the metrics (and, for the students, pruning); a result is any of fanbu.
MODEL_CODE = ("fanbu.data", "fanbu.evaluate", "fanbu.models", "fanbu.train")
STUDENT_CODE = (*MODEL_CODE, "fanbu.derive")
RESULT_CODE = ("fanbu",)

Labeled = tuple[list[str], list[int]]


def caps(quick: bool) -> dict[str, Any]:
    """Data and run sizes (quick: three domains, capped slices, 64 tokens), and the attacks' strengths.

    ``grid`` holds the attack grid's own sizes: its private and validation caps, the public texts of
    FedMKT's garbage-logit runs, the test texts each cell is scored on (quick: a fixed sample per
    domain; full: the whole test split) and its rounds. Why the quick sizes are what they are: see
    :mod:`fanbu.bench.federated`.
    """
    if quick:
        return {
            "domains": ["comp", "sci", "politics"],
            "public": 100,
            "private": 100,
            "validation": 50,
            "test": 300,
            "max_length": 64,
            "rounds": 2,
            "v0_epochs": 2,
            "clients_per_domain": 5,  # 15 clients: 3 attackers at 20%, and Bulyan's 4f + 3 = 15
            "alpha": 0.5,
            "grid": {"private": 60, "validation": 10, "public": 30, "test": 200, "rounds": 2, "rules": RULES},
            "attacks": copy.deepcopy(QUICK_ATTACK_STRENGTHS),
            "scale": {"domains": ["comp", "rec", "sci", "politics", "religion"], "per_domain": 20,
                      "private": 200, "validation": 10, "public": 50, "rounds": 1},
        }
    return {
        "domains": None,
        "public": 250,
        "private": 600,
        "validation": 200,
        "test": None,
        "max_length": 128,
        "rounds": 3,
        "v0_epochs": 3,
        "clients_per_domain": 5,
        "alpha": 0.5,
        "grid": {"private": 300, "validation": 100, "public": 250, "test": None, "rounds": 3, "rules": RULES},
        "attacks": copy.deepcopy(ATTACK_STRENGTHS),
        "scale": {"domains": None, "per_domain": 20, "private": 400, "validation": 40, "public": 100,
                  "rounds": 3},
    }
