"""Reinforcement-learning domains: environment variants as industries, small expert policies, and the
swarm fed back into a general policy that adapts to a new variant fast.

- :mod:`fanbu.rl.variants`: families of Gymnasium variants (physics parameters set on ``env.unwrapped``);
- :mod:`fanbu.rl.policy`: the categorical MLP policy, a ``module`` model saved as safetensors;
- :mod:`fanbu.rl.evaluate`: greedy returns over seeded episodes, split into ``gate`` and ``test`` seeds;
- :mod:`fanbu.rl.ppo` and :mod:`fanbu.rl.experts`: Stable-Baselines3 PPO, one expert per training variant;
- :mod:`fanbu.rl.distill`: multi-teacher DAgger policy distillation through the one training loop;
- :mod:`fanbu.rl.merge`: weight merging of same-shaped experts (uniform averaging);
- :mod:`fanbu.rl.gate`: the gate on returns, recorded like every other gate;
- :mod:`fanbu.rl.reptile` and :mod:`fanbu.rl.adapt`: Reptile meta-initialisation and steps-to-target;
- :mod:`fanbu.rl.derive`: a small policy from the general one (structured pruning, then distillation);
- :mod:`fanbu.rl.artefacts`: saving and registering policies with provenance and lineage.

Gymnasium and Stable-Baselines3 come with the ``rl`` extra; they are imported when first used.
"""
