"""What ``fanbu federate RECIPE.yaml`` runs: the algorithm, the clients, their data, attacks, defences.

A recipe validates without building anything. Settings that only make sense together are checked
together: an attack must fit the exchange (``garbage_logits`` needs the logit exchange of FedMKT, a
model-poisoning attack needs shared parameters), SecAgg+ needs plain FedAvg, and a robust rule must
have enough clients to tolerate the attackers it is asked to (checked as soon as the number of
clients is known: here when ``data.domains`` is given, else when the run starts).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from fanbu.config import Strict
from fanbu.data.slices import SliceSpec
from fanbu.derive.finetune.config import LoraSettings
from fanbu.derive.presets import CLIENT_STAGES, copy_stages
from fanbu.derive.stages import parse_stages
from fanbu.errors import ConfigError
from fanbu.federated.attacks import ARRAY_ATTACKS, AttackConfig
from fanbu.federated.privacy import PrivacyConfig, check_compatible
from fanbu.federated.robust import RobustConfig, check_clients
from fanbu.federated.server_opt import ServerOptConfig
from fanbu.feedback.gate.promotion import GateConfig
from fanbu.feedback.shared.continual import ContinualConfig
from fanbu.train.config import TrainConfig

Algorithm = Literal["fedavg", "fedprox", "fedmkt"]

class FederatedData(SliceSpec):
    """The domains whose organisations take part, and how much of their data each side reads: a
    :class:`SliceSpec` plus the private cap (clients), the public cap (the logit exchange) and the gate
    cap (the server's promotion decision)."""

    max_private: int | None = Field(
        None, ge=1, description="Cap on a domain's private slice (before sharding)."
    )
    max_public: int | None = Field(250, ge=1, description="Cap on public examples per domain.")
    max_gate: int | None = Field(
        None, ge=1, description="Cap on gate examples per task (the split promotion decides on; default: all)."
    )


class PartitionConfig(Strict):
    """How each domain's private slice is cut into clients."""

    clients_per_domain: int = Field(1, ge=1, description="Clients (organisations) per domain.")
    alpha: float | None = Field(
        None,
        gt=0,
        description="Dirichlet concentration of the label mix per client (small: skewed, non-IID); "
        "null: an IID split stratified by label.",
    )
    min_examples: int = Field(2, ge=1, description="Fewest private examples a client may hold.")
    seed: int = Field(0, description="Seeds the split.")


class SharingConfig(Strict):
    """FedAvg / FedProx: which parameters the clients and the server exchange."""

    mode: Literal["full", "lora"] = Field(
        "full", description="full: every trainable weight; lora: PEFT LoRA adapters plus the heads."
    )
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA settings (mode: lora).")


class ClientModels(Strict):
    """Where FedMKT's clients get their small models (FedAvg / FedProx clients share the champion's)."""

    source: Literal["derive", "registry"] = Field(
        "derive", description="derive: a student per domain from the champion now; registry: `models`."
    )
    models: dict[str, str] = Field(
        default_factory=dict,
        description="Domain -> a registered model (an id, or a name: its newest version).",
    )
    stages: list[Any] = Field(
        default_factory=lambda: copy_stages(CLIENT_STAGES),
        description="Derive stages of the students (no quantize: clients keep training them).",
    )
    max_train: int | None = Field(None, ge=1, description="Cap on private examples used to derive a student.")

    @field_validator("stages")
    @classmethod
    def _stages_valid(cls, stages: list[Any]) -> list[Any]:
        try:
            parsed = parse_stages(stages)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if any(name == "quantize" for name, _ in parsed):
            raise ValueError("drop the quantize stage: FedMKT clients keep training their models in PyTorch")
        return stages

    @model_validator(mode="after")
    def _check(self) -> ClientModels:
        if self.source == "registry" and not self.models:
            raise ValueError("source is 'registry' but no models are listed; add domain: model under models")
        if self.source == "derive" and self.models:
            raise ValueError("models are listed but source is 'derive'; set source: registry to use them")
        return self


def _server_train() -> TrainConfig:
    return TrainConfig(epochs=2, batch_size=16, lr=5e-5, progress=False)


def _client_train() -> TrainConfig:
    return TrainConfig(epochs=1, batch_size=16, lr=5e-5, restore_best=False, progress=False)


class MKTConfig(Strict):
    """FedMKT: clients and server exchange logits on the public texts and distil each other."""

    temperature: float = Field(2.0, gt=0, description="Softmax temperature of the exchanged knowledge.")
    server_alpha: float = Field(
        0.7, ge=0, le=1, description="Server: weight of the clients' soft labels (public labels: 1 - alpha)."
    )
    client_alpha: float = Field(
        0.5, ge=0, le=1, description="Client: weight of the server's soft labels (its labels: 1 - alpha)."
    )
    selection: Literal["none", "confidence", "agreement"] = Field(
        "agreement",
        description="Which aggregated client knowledge the server keeps per public text: all; weighted by "
        "confidence (dropped under threshold); or also only where it agrees with the public label.",
    )
    threshold: float = Field(0.0, ge=0, le=1, description="Drop knowledge whose confidence is below this.")
    server_train: TrainConfig = Field(default_factory=_server_train, description="The server's distillation.")
    client_train: TrainConfig = Field(
        default_factory=_client_train, description="A client's training per round."
    )
    continual: ContinualConfig = Field(
        default_factory=ContinualConfig, description="Safeguards of the large model's held-out heads."
    )


class SimulationConfig(Strict):
    """Flower's simulation runtime (Ray) on this machine."""

    num_cpus: int = Field(2, ge=1, description="CPUs Ray may use.")
    client_cpus: float = Field(
        1.0, gt=0, description="CPUs reserved per ClientApp (parallel clients = num_cpus / this)."
    )
    round_timeout: float = Field(3600.0, gt=0, description="Seconds the server waits for a round's replies.")


def _local() -> TrainConfig:
    return TrainConfig(epochs=1, batch_size=16, lr=5e-5, restore_best=False, progress=False)


class FederatedRecipe(Strict):
    """What ``fanbu federate`` runs."""

    champion: str = Field("large", description="A registered model id (large:v0), or a name: its champion.")
    max_length: int | None = Field(None, ge=8, description="Tokens per text; default: the champion's.")
    algorithm: Algorithm = Field(
        "fedavg",
        description="fedavg / fedprox: shared parameters (the champion's architecture); fedmkt: logits on "
        "the public texts, for clients with models of their own.",
    )
    rounds: int = Field(3, ge=1, description="Federated rounds.")
    fraction_train: float = Field(1.0, gt=0, le=1, description="FedAvg / FedProx: clients sampled per round.")
    proximal_mu: float = Field(
        0.01, gt=0, description="FedProx: weight of the proximal term mu/2 ||w - w_t||^2."
    )
    share: SharingConfig = Field(default_factory=SharingConfig)
    server: ServerOptConfig = Field(
        default_factory=ServerOptConfig,
        description="FedAvg / FedProx: server learning rate and momentum on the aggregate (FedAvgM).",
    )
    local: TrainConfig = Field(
        default_factory=_local, description="FedAvg / FedProx: a client's local training."
    )
    head_round: TrainConfig | None = Field(
        None,
        description="FedAvg / FedProx: after the last round, one more in which each client trains only its "
        "domain head on the final shared encoder (these settings; e.g. epochs 3, lr 1e-3), so that each "
        "head fits the averaged encoder; null: off.",
    )
    mkt: MKTConfig = Field(default_factory=MKTConfig)
    clients: ClientModels = Field(default_factory=ClientModels)
    data: FederatedData = Field(default_factory=FederatedData)
    partition: PartitionConfig = Field(default_factory=PartitionConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    robust: RobustConfig = Field(default_factory=RobustConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    save_clients: bool = Field(
        True, description="Clients save their final models (registered as new versions)."
    )
    seed: int = Field(0, description="Seeds every random choice.")

    @model_validator(mode="after")
    def _consistent(self) -> FederatedRecipe:
        kind = self.attack.kind
        if self.algorithm == "fedmkt" and kind in ARRAY_ATTACKS:
            raise ValueError(
                f"attack.kind {kind} poisons shared parameters, but fedmkt exchanges logits; use "
                "garbage_logits or label_flip, or algorithm fedavg / fedprox"
            )
        if self.algorithm != "fedmkt" and kind == "garbage_logits":
            raise ValueError(
                f"attack.kind garbage_logits needs the logit exchange: set algorithm: fedmkt, not {self.algorithm}"
            )
        if self.algorithm == "fedmkt" and self.share != SharingConfig():
            raise ValueError("share applies to fedavg / fedprox only; fedmkt exchanges logits: remove share")
        if self.algorithm == "fedmkt" and self.head_round is not None:
            raise ValueError("head_round applies to fedavg / fedprox only; fedmkt clients keep their own models")
        if self.algorithm == "fedmkt" and not self.server.plain:
            raise ValueError("server applies to fedavg / fedprox only; fedmkt distils on the server: remove server")
        if self.privacy.secagg.enabled and not self.server.plain:
            raise ValueError("privacy.secagg runs Flower's SecAgg+ workflow, which has no server step: remove server")
        if self.algorithm == "fedmkt" and self.fraction_train < 1:
            raise ValueError("fedmkt asks every client each round: set fraction_train: 1")
        try:
            exchange = "logits" if self.algorithm == "fedmkt" else "arrays"
            check_compatible(self.privacy, self.robust.rule, exchange)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if self.data.domains is not None:
            try:
                self.check_clients(len(self.data.domains))
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return self

    @property
    def shared_rounds(self) -> int:
        """FedAvg / FedProx: the rounds the server runs (``rounds``, plus the head round when it is on)."""
        return self.rounds + (1 if self.head_round is not None else 0)

    def n_clients(self, n_domains: int) -> int:
        """How many clients a run over ``n_domains`` domains has."""
        return n_domains * self.partition.clients_per_domain

    def check_clients(self, n_domains: int) -> None:
        """Refuse a robust rule that cannot tolerate the attackers with this many clients.

        FedAvg / FedProx aggregate all sampled clients together; FedMKT aggregates each domain's
        clients on that domain's public texts, so there the count per domain matters.

        Raises:
            ConfigError: naming the minimum number of clients.
        """
        if self.algorithm == "fedmkt":
            n = self.partition.clients_per_domain
            where = "per domain: fedmkt aggregates each domain's logits on their own"
        else:
            n = max(1, round(self.fraction_train * self.n_clients(n_domains)))
            where = "sampled per round"
        f = self.robust.tolerated(n, self.attack.fraction)
        beta = self.robust.trim_beta if self.robust.rule == "trimmed_mean" else None
        try:
            check_clients(self.robust.rule, n, f, beta)
        except ConfigError as exc:
            raise ConfigError(f"{exc} ({n} client(s) {where})") from None
