"""What a federated run produced: the final large model, the clients' models and the history.

Its own module, so that :mod:`fanbu.federated.run` (which makes it) and
:mod:`fanbu.federated.preparation` (which registers it) both import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fanbu.errors import FanbuError
from fanbu.models.encoder import EncoderHandle


@dataclass
class FederatedResult:
    """What a federated run produced."""

    large: EncoderHandle
    clients: dict[str, EncoderHandle]
    rounds: list[dict[str, Any]]
    client_metrics: dict[str, dict[str, Any]]
    privacy: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    work_dir: Path = Path(".")

    def seconds_per_round(self) -> float:
        """Mean wall time of a round (from the server's per-round records)."""
        timed = [r for r in self.rounds if r["round"] > 0]
        if not timed:
            return 0.0
        start = next((r["seconds"] for r in self.rounds if r["round"] == 0), 0.0)
        return (timed[-1]["seconds"] - start) / timed[-1]["round"]

    def clients_mean(self, key: str = "acc-after", honest: bool = True) -> float:
        """Mean of a client metric (``acc-before`` / ``acc-after``), over honest clients by default."""
        rows = [m for m in self.client_metrics.values() if not (honest and m.get("malicious"))]
        values = [float(m[key]) for m in rows if key in m]
        if not values:
            raise FanbuError(f"no client reported {key!r}")
        return sum(values) / len(values)
