"""The metrics an HCT run writes: the only place where a run keeps Python lists.

:class:`Recorder` turns the array outputs of :mod:`hcjax.hct.round` (an
evaluation, a selection event, the consensus) into JSON-ready records:
``rounds`` (one record per unit, written to ``metrics.jsonl``), ``lineage``
(one per selection), ``constraints`` (every clustering constraint: pool
candidates and refits) and, once the rounds end, each group's consensus
member's report (``before``) and constraint history. Checkpoints store it
as JSON beside the :class:`~hcjax.hct.state.HCTState`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hcjax.engine import sharding
from hcjax.hct.round import SelectionEvent
from hcjax.hct.setup import HCTSetup

__all__ = ["Recorder", "per_member"]


def per_member(values: dict, index: int, n: int) -> dict:
    """Member ``index``'s entries of a dict of per-member lists (other entries are kept as they are)."""
    return {k: (v[index] if isinstance(v, list) and len(v) == n else v) for k, v in values.items()}


@dataclasses.dataclass
class Recorder:
    """JSON records of a run (see the module docstring)."""

    rounds: list = dataclasses.field(default_factory=list)
    lineage: list = dataclasses.field(default_factory=list)
    constraints: list = dataclasses.field(default_factory=list)
    before: list | None = None
    histories: list | None = None

    @classmethod
    def start(cls, s: HCTSetup) -> "Recorder":
        """A recorder holding the pool's constraints (ids 0..M-1)."""
        loglik, comps = np.asarray(s.pool.log_likelihood).tolist(), np.asarray(s.pool.components).tolist()
        return cls(constraints=[{"id": i, "source": "pool", "round": 0, "group": -1, "parent": -1,
                                 "components": comps[i], "log_likelihood": loglik[i]} for i in range(len(comps))])

    def selection(self, s: HCTSetup, event: SelectionEvent, round_index: int) -> dict:
        """Record a selection (and its refitted constraints); returns the lineage entry."""
        # field by field: dataclasses.asdict would deep-copy arrays that may live on several processes
        e = {f.name: (None if (v := getattr(event, f.name)) is None else sharding.to_host(v))
             for f in dataclasses.fields(event)}
        entry = {"round": round_index, "order": e["order"].tolist(), "tier": e["tier"].reshape(-1).tolist(),
                 "pruned": e["pruned"].tolist(), "parents": e["parents"].tolist(),
                 "new_ids": [int(i) for i in e["new_ids"]]}
        if e["components"] is not None:
            k = s.config.population.num_pruned
            for i, cid in enumerate(entry["new_ids"]):
                self.constraints.append({"id": cid, "source": "refit", "round": round_index, "group": i // k,
                                         "parent": entry["parents"][i], "components": int(e["components"][i]),
                                         "log_likelihood": float(e["log_likelihood"][i])})
        self.lineage.append(entry)
        return entry

    def consensus(self, chosen: list[int], evaluation: dict, n: int) -> None:
        """Record each group's consensus member: its report at the end of the rounds and its history."""
        self.before = [per_member(evaluation, i, n) for i in chosen]
        self.histories = [[int(i) for i in evaluation["constraint_ids"][m] if i >= 0] for m in chosen]

    def to_meta(self) -> dict:
        """The records as JSON-ready values (stored beside each checkpoint)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_meta(cls, meta: dict) -> "Recorder":
        """Inverse of :meth:`to_meta` (missing fields start empty)."""
        return cls(**{f.name: meta.get(f.name, f.default if f.default is not dataclasses.MISSING else [])
                      for f in dataclasses.fields(cls)})
