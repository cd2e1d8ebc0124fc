"""The feedback strategies, one module each; importing a module registers its strategy."""

from fanbu.feedback.strategies import (  # noqa: F401 (importing a strategy module registers it)
    graft,
    invariance,
    merge,
    moe,
    multitask,
    sequential,
    structure,
    swarm,
    transplant,
)
