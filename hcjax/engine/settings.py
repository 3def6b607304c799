"""The static settings of a population trainer: :class:`TrainSettings` (changing one recompiles)."""

from __future__ import annotations

import dataclasses

from hcjax._validate import check_int
from hcjax.engine import objectives as objectives_lib

__all__ = ["TrainSettings"]


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Static settings of a population trainer (changing them recompiles).

    batch_size: minibatch size per member per step (rows drawn with the
      member's key, with replacement); None uses all N rows at every step.
    num_samples: reparameterised samples per example.
    grad_clip: global-norm gradient clipping (<= 0 disables).
    with_constraint, with_alignment, with_latent_recon: compute the optional
      loss terms (each costs compute for every member when on).
    with_constraint_history: the constraint term averages over every
      constraint in a member's history (``state.past_constraints`` plus the
      current one; needs ``with_constraint``).
    binarize: dynamic binarisation of every batch (see
      :class:`hcjax.engine.objectives.LossSettings`).
    eval_kl_samples, eval_is_samples: Monte Carlo sizes of the evaluation.
    member_chunk: "auto" (default) picks a group size from the member's size and P
      (:func:`~hcjax.engine.member_groups.auto_member_chunk`: on CPU, groups whose activations fit in
      ``hcjax.engine.member_groups.AUTO_GROUP_BYTES``; on accelerators one vmap); None vmaps each step over
      all P members at once; an int C trains them in groups of at most C (see
      :func:`hcjax.engine.step.train_round`). The working set shrinks by P / c,
      which keeps large populations in cache on CPU (benchmarks/README.md).
    scan_unroll: steps per iteration of the scan over steps (``lax.scan``'s
      ``unroll``): 1 (default) compiles one step in a loop; U > 1 puts U copies
      of the step in the loop body (less loop overhead, a longer compile).
      Changes round-off only (XLA may fuse across the copies), so a value other
      than 1 changes a run's bits (benchmarks/README.md, "Scan unrolling").
    """

    batch_size: int | None = 128
    num_samples: int = 1
    grad_clip: float = 10.0
    with_constraint: bool = False
    with_alignment: bool = False
    with_latent_recon: bool = False
    binarize: bool = False
    eval_kl_samples: int = 16
    eval_is_samples: int = 32
    member_chunk: int | str | None = "auto"
    with_constraint_history: bool = False
    scan_unroll: int = 1

    def __post_init__(self):
        check_int("scan_unroll", self.scan_unroll, minimum=1)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, minimum=1)
        if self.member_chunk is not None and self.member_chunk != "auto":
            check_int("member_chunk", self.member_chunk, minimum=1)
        check_int("num_samples", self.num_samples, minimum=1)
        check_int("eval_kl_samples", self.eval_kl_samples, minimum=1)
        check_int("eval_is_samples", self.eval_is_samples, minimum=1)
        _ = self.loss  # the loss settings' own checks (with_constraint_history needs with_constraint)

    @property
    def loss(self) -> objectives_lib.LossSettings:
        """The static :class:`~hcjax.engine.objectives.LossSettings` these settings imply."""
        return objectives_lib.LossSettings(self.num_samples, self.with_constraint, self.with_alignment,
                                           self.with_latent_recon, self.binarize, self.with_constraint_history)
