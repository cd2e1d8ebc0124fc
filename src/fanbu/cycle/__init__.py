"""The cycle: derive small models from the champion -> train experts -> feed back -> gate -> next generation."""

from fanbu.cycle.recipe import CycleDerive, CycleExperts, CycleRecipe
from fanbu.cycle.run import cycle_id, finished_generations, run_cycle

__all__ = ["CycleDerive", "CycleExperts", "CycleRecipe", "cycle_id", "finished_generations", "run_cycle"]
