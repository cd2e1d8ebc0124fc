"""Federated 反哺 on Flower: the large model and the organisations' small models, without sharing data.

* :mod:`~fanbu.federated.recipe`: what ``fanbu federate`` runs (:class:`FederatedRecipe`);
* :mod:`~fanbu.federated.partition`, :mod:`~fanbu.federated.data`: which client holds what;
* :mod:`~fanbu.federated.server_app`, :mod:`~fanbu.federated.client_app`: the Flower apps (``app``);
* :mod:`~fanbu.federated.local`, :mod:`~fanbu.federated.heads`: FedAvg / FedProx on shared weights;
* :mod:`~fanbu.federated.fedmkt`: mutual knowledge transfer through logits on the public texts;
* :mod:`~fanbu.federated.attacks`, :mod:`~fanbu.federated.robust`, :mod:`~fanbu.federated.privacy`:
  malicious clients, robust aggregation, differential privacy and SecAgg+;
* :mod:`~fanbu.federated.run` (simulation, registry and gate), :mod:`~fanbu.federated.preparation`,
  :mod:`~fanbu.federated.settings` (the run config), :mod:`~fanbu.federated.deploy` (Flower deployment).

Submodules are imported on use: Flower and torch load only when a federated run needs them.
"""
