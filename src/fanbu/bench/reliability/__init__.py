"""``fanbu bench reliability``: what hostile input and crashes do to fanbu, measured.

* **Fuzzing** (:mod:`.fuzz`): the API through its OpenAPI schema (Schemathesis, in-process), the data
  loaders with generated files, every shipped recipe mutated; counted: 5xx answers, schema violations,
  errors that are not the documented ``DomainError`` / ``ConfigError``.
* **Neighbours** (:mod:`.neighbours`): bad requests sent at the same moment as good ones, to a model
  and a cascade on a real server; counted: good requests that failed.
* **Faults** (:mod:`.faults`): kill -9 of ``fanbu serve`` under load (with feedback), ``fanbu derive``
  and ``fanbu feedback`` at random moments, then a rerun and ``fanbu doctor``; counted: acknowledged
  records lost, corrupt artefacts, registry rows that do not match the disk.
* **Load** (:mod:`.load`): 80% of the measured capacity for a fixed time, hostile requests mixed in;
  p95 drift, memory growth, status codes.
"""

from fanbu.bench.reliability.run import run_bench

__all__ = ["run_bench"]
