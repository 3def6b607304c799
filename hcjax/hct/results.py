"""What an HCT run produced: :class:`HCTResult`, summaries, and the saved final model."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hcjax._io import atomic_write_json, atomic_write_with
from hcjax.engine import population as pop
from hcjax.engine import sharding
from hcjax.hct.config import HCTConfig
from hcjax.vae import priors
from hcjax.vae.models import ModelConfig

__all__ = ["HCTResult", "report_to_dict", "summarise", "member_stats", "model_label", "SUMMARY_KEYS",
           "save_final_model", "load_final_model"]


def report_to_dict(report, index: int | None = None) -> dict:
    """A CollapseReport (optionally member ``index`` of a stacked one) as plain Python values."""
    out = {}
    for f in dataclasses.fields(report):
        v = sharding.to_host(getattr(report, f.name))
        if index is not None:
            v = v[index]
        out[f.name] = v.tolist()
    return out


def member_stats(values, keep) -> tuple:
    """(min, median, max) of per-member ``values`` over the kept (non-diverged) members, ignoring None and
    non-finite values; (None, None, None) when none is left."""
    v = np.asarray([x for x, k in zip(values, keep) if k], np.float64)  # None becomes NaN
    v = v[np.isfinite(v)]
    return (float(v.min()), float(np.median(v)), float(v.max())) if v.size else (None, None, None)


def model_label(name: str) -> str:
    """A summary key as tables show it: ``hct:fixed`` -> ``HCT, then fixed``; baselines keep their names."""
    return f"HCT, then {name[4:]}" if name.startswith("hct:") else name


SUMMARY_KEYS = ("active_units", "mutual_info", "kl", "elbo", "log_likelihood", "margin", "probe_accuracy",
                "knn_accuracy", "label_ari")


def summarise(reports: list[dict], keys=SUMMARY_KEYS) -> dict:
    """Mean/min/max/n of ``keys`` over the members that did not diverge, and the member counts.

    A member with ``"diverged": True`` (see :class:`hcjax.hct.evaluate.Evaluation`) is left out of every
    mean, and any other non-finite value is left out of its own metric: ``n`` says how many values a mean
    covers, ``members`` how many members there were and how many diverged.
    """
    healthy = [r for r in reports if not r.get("diverged", False)]
    out = {}
    for k in keys:
        vals = [float(r[k]) for r in healthy if r.get(k) is not None and math.isfinite(float(r[k]))]
        if vals:
            out[k] = {"mean": float(np.mean(vals)), "min": float(np.min(vals)), "max": float(np.max(vals)),
                      "n": len(vals)}
    out["members"] = {"n": len(reports), "diverged": len(reports) - len(healthy)}
    return out


@dataclasses.dataclass
class HCTResult:
    """Everything a run produced.

    groups: one dict per group (beta, decoder_variance, decoder_variance_scale,
    consensus_member (global slot), consensus_history (constraint ids),
    before (the consensus member's report at the end of the rounds));
    rounds: per-unit metrics dicts (per-member lists over all G * P members);
    lineage: selection events; constraints: every clustering constraint (id,
    source, parent, group, J); final: one dict per final slot (group, slot,
    objective, report); baselines: one dict per baseline member (group,
    method, member, report); pool: the candidate priors [M]; state: the run's
    final :class:`~hcjax.hct.state.HCTState` (``final_state`` and ``baseline_state`` are
    its two populations); teacher_information: I_T of the certificate's
    teacher (or None); heldout: where the final and baseline reports were
    measured (``{"split": "test" | "val", "rows": n, "is_samples": K}``).
    ``consensus_member``, ``consensus_history``, ``before``
    and ``decoder_variance`` are group 0's, for single-group runs.
    """

    config: HCTConfig
    model_config: ModelConfig
    dataset: str
    lambda_max: float
    groups: list
    rounds: list
    lineage: list
    constraints: list
    final: list
    baselines: list
    pool: Any
    state: Any
    teacher_information: float | None
    elapsed_seconds: float
    heldout: dict = dataclasses.field(default_factory=dict)

    decoder_variance = property(lambda self: self.groups[0]["decoder_variance"], doc="Group 0's s2.")
    consensus_member = property(lambda self: self.groups[0]["consensus_member"], doc="Group 0's consensus slot.")
    consensus_history = property(lambda self: self.groups[0]["consensus_history"], doc="Group 0's history.")
    final_state = property(lambda self: self.state.members, doc="The HCT population at the end (``state.members``).")
    baseline_state = property(lambda self: self.state.baselines, doc="The baseline population (or None).")
    before = property(lambda self: self.groups[0]["before"], doc="Group 0's consensus report before the final phase.")

    def final_summary(self, group: int = 0) -> dict:
        """Mean/min/max of the key metrics per final objective (``hct:<objective>``) and per baseline, in ``group``."""
        by_name: dict[str, list] = {}
        for slot in self.final:
            if slot["group"] == group:
                by_name.setdefault(f"hct:{slot['objective']}", []).append(slot["report"])
        for b in self.baselines:
            if b["group"] == group:
                by_name.setdefault(b["method"], []).append(b["report"])
        return {name: summarise(reps) for name, reps in by_name.items()}

    def to_json(self) -> dict:
        """The result as ``summary.json`` holds it (everything but the arrays)."""
        return {
            "config": self.config.to_dict(), "model_config": self.model_config.to_dict(), "dataset": self.dataset,
            "lambda_max": self.lambda_max, "groups": self.groups, "rounds": self.rounds, "lineage": self.lineage,
            "constraints": self.constraints, "final": self.final, "baselines": self.baselines,
            "summary": [self.final_summary(g) for g in range(len(self.groups))],
            "teacher_information": self.teacher_information, "heldout": self.heldout,
            "elapsed_seconds": self.elapsed_seconds,
        }


def save_final_model(result: HCTResult, directory: str, slot: int | None = None) -> str:
    """Write the consensus model after the single-objective phase (final slot ``slot``) to ``directory``.

    ``slot`` defaults to the first final slot (the consensus member itself
    when the run had no final phase).

    Files: ``model.json`` (model config, decoder variance, objective of the
    slot, constraint history) and ``params.npz`` (flattened network
    parameters, prior arrays, log decoder variance). Load with
    :func:`load_final_model`.
    """
    from flax import traverse_util

    if slot is None:
        slot = result.final[0]["slot"]
    os.makedirs(directory, exist_ok=True)
    member = pop.take(result.final_state, slot)
    flat = traverse_util.flatten_dict(jax.device_get(member.params), sep="/")
    arrays = {f"params/{k}": np.asarray(v) for k, v in flat.items()}
    arrays |= {"prior/logits": np.asarray(member.prior.logits), "prior/means": np.asarray(member.prior.means),
               "prior/log_vars": np.asarray(member.prior.log_vars), "log_s2": np.asarray(member.log_s2)}
    atomic_write_with(os.path.join(directory, "params.npz"), lambda tmp: np.savez(tmp, **arrays))
    entry = next((e for e in result.final if e["slot"] == slot), None)
    if entry is None:
        raise ValueError(f"slot {slot} is not a final slot of this result (slots: {[e['slot'] for e in result.final]}).")
    group = result.groups[entry["group"]]
    atomic_write_json(os.path.join(directory, "model.json"),
                      {"model_config": result.model_config.to_dict(), "decoder_variance": group["decoder_variance"],
                       "beta": group["beta"], "objective": entry["objective"],
                       "consensus_history": group["consensus_history"], "dataset": result.dataset}, indent=2)
    return directory


def load_final_model(directory: str):
    """Inverse of :func:`save_final_model`: returns ``(vae, params, prior, log_s2, info)``."""
    from flax import traverse_util

    from hcjax.vae.models import make_vae

    with open(os.path.join(directory, "model.json")) as f:
        info = json.load(f)
    with np.load(os.path.join(directory, "params.npz")) as z:
        arrays = {k: z[k] for k in z.files}
    vae = make_vae(ModelConfig.from_dict(info["model_config"]))
    params = traverse_util.unflatten_dict({k[len("params/"):]: jnp.asarray(v) for k, v in arrays.items()
                                           if k.startswith("params/")}, sep="/")
    prior = priors.MixturePrior(jnp.asarray(arrays["prior/logits"]), jnp.asarray(arrays["prior/means"]),
                                jnp.asarray(arrays["prior/log_vars"]))
    return vae, params, prior, jnp.asarray(arrays["log_s2"]), info
