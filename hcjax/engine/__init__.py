"""The population engine: objectives, the public member step, populations, selection, sharding, checkpoints.

A population is one pytree with a leading member axis; a round is one jitted
``lax.scan`` over steps of a ``vmap`` over members (:mod:`hcjax.engine.step`).
"""
