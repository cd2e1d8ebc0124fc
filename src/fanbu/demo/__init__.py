"""``fanbu demo``: the main job on the built-in default, and one generation of the cycle after it.

:mod:`fanbu.demo.recipe` holds the settings (:class:`DemoRecipe`), :mod:`fanbu.demo.run` the job
(:func:`run_demo`), and :mod:`fanbu.demo.feedback` its feedback step (:func:`feed_back`). The modules
import one way only: ``run`` -> ``feedback`` -> ``recipe``.
"""

from fanbu.demo.feedback import feed_back
from fanbu.demo.recipe import BenchmarkSettings, DemoDerive, DemoFeedback, DemoRecipe
from fanbu.demo.run import derive_small, run_demo

__all__ = [
    "BenchmarkSettings",
    "DemoDerive",
    "DemoFeedback",
    "DemoRecipe",
    "derive_small",
    "feed_back",
    "run_demo",
]
