"""Training throughput of an HCT population, side by side with per-member loops.

Model: an MLP VAE (hcjax ``kind="mlp"``: GELU hidden layers, mean and log-variance
heads, Gaussian decoder with a fixed s2) under a J-component diagonal GMM
prior whose KL is estimated by Monte Carlo (one reparameterised sample), Adam
with global-norm clipping 10, batch B drawn with replacement per member and
step. Implementations, measured in the same process, interleaved, for every P:

  (a) hcjax: ``Trainer.train`` as a user gets it (``TrainSettings`` defaults,
      ``member_chunk="auto"``): one jitted program, a loop over groups of
      members (the group size chosen from the member's size and P), each a
      ``lax.scan`` over T steps of a ``vmap`` over the group, read from and
      written back into the population in place; one group (a plain
      scan-of-vmap) when the whole population fits.
  (a') hcjax_one_vmap: the same with ``member_chunk=None``: one ``vmap`` over
      all P members (timed only where (a) uses groups).
  (b) jax_loop: one member's step written from ``objectives.member_loss`` and
      optax, jitted once, called in a Python loop over members (and steps).
  (c) torch_loop: PyTorch eager, same architecture/objective/optimizer, a
      Python loop over members (one ``nn.Module`` + ``torch.optim.Adam`` each).
  (d) torch_vmap: ``torch.func.vmap`` over stacked member parameters
      (``stack_module_state`` + ``functional_call``), one Adam over the stacked
      tensors (Adam is elementwise, so this is per-member Adam) and per-member
      gradient clipping.

(c) and (d) need PyTorch (the optional ``bench`` extra: ``pip install
hcjax[bench]``, or ``pip install torch``); without it they are skipped.

Also recorded: compile time (XLA backend compile events via jax.monitoring,
and the first call's wall time) separately from step time; that calls after
the first never compile again (several "rounds"), also inside a real
``run_hct``; achieved GFLOP/s of (a) from an analytic count of the MLP's
matmul FLOPs (forward + backward), cross-checked against XLA's
``cost_analysis()``, against the machine's float32 matmul rate measured in
the same run; a breakdown of where a step's time goes at the largest P; and
peak memory (peak RSS, VmHWM) against P, each P in a fresh subprocess.

    python benchmarks/population_throughput.py               # full run (~15-25 min on 2 cores)
    python benchmarks/population_throughput.py --quick       # smoke test

Outputs: ``benchmarks/results/population_throughput.json`` (everything, raw
per-repeat timings included) and ``population_throughput.csv`` (one row per
P and implementation).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _common  # noqa: E402

LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------------------- shapes and FLOPs


def layer_shapes(data_dim, hidden, latent):
    """(in, out) of every dense layer: encoder (hidden..., mean, log_var), decoder (hidden reversed..., output)."""
    enc, prev = [], data_dim
    for h in hidden:
        enc.append((prev, h))
        prev = h
    enc += [(prev, latent), (prev, latent)]
    dec, prev = [], latent
    for h in reversed(hidden):
        dec.append((prev, h))
        prev = h
    dec.append((prev, data_dim))
    return enc, dec


def analytic_flops(data_dim, hidden, latent, batch):
    """Matmul FLOPs of one member-step: forward 2*B*in*out per layer; backward = weight grads for every layer
    (2*B*in*out) + input grads for every layer except the first encoder layer (its input is data)."""
    enc, dec = layer_shapes(data_dim, hidden, latent)
    layers = enc + dec
    fwd = sum(2 * batch * i * o for i, o in layers)
    bwd = sum(2 * batch * i * o for i, o in layers) * 2 - 2 * batch * enc[0][0] * enc[0][1]
    return {"forward": fwd, "backward": bwd, "total": fwd + bwd,
            "num_params": sum(i * o + o for i, o in layers)}


# ----------------------------------------------------------------------------- JAX implementations


def jax_setup(shape, p, seed=0, member_chunk="auto", scan_unroll=1):
    import jax
    import jax.numpy as jnp

    from hcjax.engine import objectives
    from hcjax.engine import population as pop
    from hcjax.vae import priors
    from hcjax.vae.models import ModelConfig

    model = ModelConfig(kind="mlp", data_dim=shape["data_dim"], latent_dim=shape["latent_dim"],
                        hidden=tuple(shape["hidden"]))
    settings = pop.TrainSettings(batch_size=shape["batch"], num_samples=1, grad_clip=10.0, member_chunk=member_chunk,
                                 scan_unroll=scan_unroll)
    import chex

    chex.clear_trace_counter()  # chex counts traces per function across Trainer instances
    trainer = pop.Trainer(model, settings, max_traces=1)  # raises if train_round is ever traced twice
    j, d = shape["components"], shape["latent_dim"]
    means = 2.0 * jax.random.normal(jax.random.key(seed + 1), (p, j, d))
    prior = priors.MixturePrior(jnp.zeros((p, j)), means, jnp.zeros((p, j, d)))
    obj = objectives.objective_params(beta=1.0, analytic_kl=False)  # GMM prior: Monte Carlo KL
    state = trainer.init_population(jax.random.key(seed), prior, obj, 1e-3, 1.0)
    return trainer, state


def make_member_loop(shape, state, data):
    """(b): one member's step from objectives.member_loss + optax, jitted once, looped over in Python."""
    import jax
    import optax

    from hcjax.engine import objectives
    from hcjax.vae.models import ModelConfig, make_vae

    vae = make_vae(ModelConfig(kind="mlp", data_dim=shape["data_dim"], latent_dim=shape["latent_dim"],
                               hidden=tuple(shape["hidden"])))
    opt = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(1e-3))
    loss_settings = objectives.LossSettings(num_samples=1)
    batch = shape["batch"]

    def step(params, opt_state, key, count, prior, log_s2, obj, data):
        key, k_batch, k_loss = jax.random.split(key, 3)
        x = data[jax.random.randint(k_batch, (batch,), 0, data.shape[0])]

        def loss_fn(pr):
            return objectives.member_loss({"params": pr, "prior": prior, "log_s2": log_s2}, vae, obj, count, x,
                                          k_loss, loss_settings)

        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, key, count + 1, loss

    step = jax.jit(step)
    p = int(state.step.shape[0])
    members = []
    for i in range(p):
        m = jax.tree.map(lambda a: a[i], state)
        members.append([m.params, opt.init(m.params), jax.random.wrap_key_data(m.key), m.step, m.prior,
                        m.log_s2, m.objective])

    def run(num_steps):
        out = None
        for _ in range(num_steps):
            for m in members:
                m[0], m[1], m[2], m[3], out = step(m[0], m[1], m[2], m[3], m[4], m[5], m[6], data)
        jax.block_until_ready([m[0] for m in members])
        return out

    return run, step


# ----------------------------------------------------------------------------- PyTorch implementations


def torch_available():
    try:
        import torch  # noqa: F401

        return True
    except ImportError:
        return False


def torch_builders(shape):
    import torch
    from torch import nn

    d_in, hidden, d = shape["data_dim"], tuple(shape["hidden"]), shape["latent_dim"]
    gelu = lambda t: nn.functional.gelu(t, approximate="tanh")  # flax's nn.gelu default

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            enc, prev = [], d_in
            for h in hidden:
                enc.append(nn.Linear(prev, h))
                prev = h
            self.enc = nn.ModuleList(enc)
            self.mean = nn.Linear(prev, d)
            self.log_var = nn.Linear(prev, d)
            nn.init.zeros_(self.log_var.weight)
            dec, prev = [], d
            for h in reversed(hidden):
                dec.append(nn.Linear(prev, h))
                prev = h
            self.dec = nn.ModuleList(dec)
            self.out = nn.Linear(prev, d_in)

        def forward(self, x, eps, logits, means, log_vars, log_s2):
            h = x
            for layer in self.enc:
                h = gelu(layer(h))
            mu, lv = self.mean(h), self.log_var(h).clamp(-14.0, 7.0)
            z = mu + torch.exp(0.5 * lv) * eps
            h = z
            for layer in self.dec:
                h = gelu(layer(h))
            xhat = self.out(h)
            recon = -0.5 * (d_in * (LOG_2PI + log_s2) + ((x - xhat) ** 2).sum(-1) * torch.exp(-log_s2))
            quad = (((z[:, None, :] - means) ** 2) * torch.exp(-log_vars)).sum(-1)
            comp = torch.log_softmax(logits, -1) - 0.5 * (quad + log_vars.sum(-1) + d * LOG_2PI)
            log_pz = torch.logsumexp(comp, -1)
            entropy = 0.5 * (lv + 1.0 + LOG_2PI).sum(-1)
            return (-recon - log_pz - entropy).mean()  # -ELBO with the Monte Carlo KL, beta = 1

    return VAE


def torch_priors(shape, p, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    j, d = shape["components"], shape["latent_dim"]
    return torch.zeros(p, j), 2.0 * torch.randn(p, j, d, generator=g), torch.zeros(p, j, d)


def torch_members(shape, p, seed=0):
    """P freshly initialised torch VAEs (seeded), their GMM priors ([P, J], [P, J, d], [P, J, d]) and log s2."""
    import torch

    vae = torch_builders(shape)
    torch.manual_seed(seed)
    priors = torch_priors(shape, p, seed)
    return [vae() for _ in range(p)], priors, torch.zeros(())


def make_torch_loop(shape, p, data, seed=0):
    """(c): PyTorch eager, a Python loop over members."""
    import torch

    models, (logits, means, log_vars), log_s2 = torch_members(shape, p, seed)
    opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in models]
    n, b, d = data.shape[0], shape["batch"], shape["latent_dim"]

    def run(num_steps):
        loss = None
        for _ in range(num_steps):
            for i, (m, opt) in enumerate(zip(models, opts)):
                x = data[torch.randint(n, (b,))]
                eps = torch.randn(b, d)
                loss = m(x, eps, logits[i], means[i], log_vars[i], log_s2)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(m.parameters(), 10.0)
                opt.step()
        return float(loss.detach())

    return run


def make_torch_vmap(shape, p, data, seed=0):
    """(d): torch.func.vmap over stacked member parameters."""
    import copy

    import torch
    from torch.func import functional_call, stack_module_state, vmap

    models, (logits, means, log_vars), log_s2 = torch_members(shape, p, seed)
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    del models
    tensors = list(params.values())
    opt = torch.optim.Adam(tensors, lr=1e-3)
    n, b, d = data.shape[0], shape["batch"], shape["latent_dim"]

    def member(pr, bu, x, eps, lg, mn, lv):
        return functional_call(base, (pr, bu), (x, eps, lg, mn, lv, log_s2))

    batched = vmap(member)

    def run(num_steps):
        loss = None
        for _ in range(num_steps):
            x = data[torch.randint(n, (p, b))]
            eps = torch.randn(p, b, d)
            losses = batched(params, buffers, x, eps, logits, means, log_vars)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()  # members are independent: grad of the sum = per-member grads
            with torch.no_grad():
                norms = torch.sqrt(sum((t.grad.reshape(p, -1) ** 2).sum(1) for t in tensors))
                scale = torch.clamp(10.0 / (norms + 1e-6), max=1.0)
                for t in tensors:
                    t.grad.mul_(scale.reshape((p,) + (1,) * (t.dim() - 1)))
            opt.step()
            loss = losses
        return float(loss.mean())

    return run


# ----------------------------------------------------------------------------- measurements


def matmul_rate(n=2048, repeats=5):
    """Best float32 GFLOP/s of a jitted [n, n] @ [n, n] (the machine's matmul rate as XLA sees it)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(jnp.dot)
    f(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    return {"n": n, "seconds": times, "gflops": 2 * n**3 / min(times) / 1e9}


def torch_matmul_rate(n=2048, repeats=5):
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return {"n": n, "seconds": times, "gflops": 2 * n**3 / min(times) / 1e9, "threads": torch.get_num_threads()}


def model_shaped_matmuls(shape, p, repeats=5):
    """GFLOP/s of exactly the model's matmuls (forward + backward shapes), batched over P members, alone."""
    import jax
    import jax.numpy as jnp

    enc, dec = layer_shapes(shape["data_dim"], shape["hidden"], shape["latent_dim"])
    b = shape["batch"]
    key = jax.random.key(0)
    ops = []
    for li, (i, o) in enumerate(enc + dec):
        k1, k2, k3, key = jax.random.split(key, 4)
        x = jax.random.normal(k1, (p, b, i))
        w = jax.random.normal(k2, (p, i, o))
        g = jax.random.normal(k3, (p, b, o))
        ops.append((x, w, g))
    needs_input_grad = [li > 0 for li in range(len(ops))]  # static: no input gradient for the data layer

    @jax.jit
    def all_matmuls(ops):
        out = 0.0
        for (x, w, g), need_input_grad in zip(ops, needs_input_grad):
            out += jnp.sum(jnp.einsum("pbi,pio->pbo", x, w)[:, 0])  # forward
            out += jnp.sum(jnp.einsum("pbi,pbo->pio", x, g)[:, 0])  # weight gradient
            if need_input_grad:
                out += jnp.sum(jnp.einsum("pbo,pio->pbi", g, w)[:, 0])  # input gradient
        return out

    all_matmuls(ops).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        all_matmuls(ops).block_until_ready()
        times.append(time.perf_counter() - t)
    flops = analytic_flops(shape["data_dim"], shape["hidden"], shape["latent_dim"], b)["total"] * p
    return {"P": p, "seconds": times, "gflops": flops / min(times) / 1e9}


def xla_cost_flops(trainer, state, data):
    """XLA's cost_analysis FLOPs of ONE vmapped step (no scan), per member."""
    import jax

    from hcjax.engine import objectives

    p = int(state.step.shape[0])
    step = jax.jit(jax.vmap(trainer.step, in_axes=(0, None, None)))
    cost = step.lower(state, data, objectives.TrainingContext()).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return {"P": p, "flops_per_member_step": float(cost["flops"]) / p,
            "bytes_accessed_per_member_step": float(cost.get("bytes accessed", float("nan"))) / p}


def step_breakdown(shape, trainer, state, data, repeats=3):
    """Where one vmapped step's time goes: forward loss, + gradient, full step (+ optimizer, bookkeeping)."""
    import jax

    from hcjax.engine import objectives

    p = int(state.step.shape[0])
    loss_settings = trainer.settings.loss
    keys = jax.random.split(jax.random.key(5), p)
    idx = jax.random.randint(jax.random.key(6), (p, shape["batch"]), 0, data.shape[0])
    xs = data[idx]
    trainable = {"params": state.params, "prior": state.prior, "log_s2": state.log_s2}

    def loss(t, obj, step, x, k):
        return objectives.member_loss(t, trainer.vae, obj, step, x, k, loss_settings)

    fwd = jax.jit(jax.vmap(loss))
    grad = jax.jit(jax.vmap(jax.value_and_grad(loss, has_aux=True)))
    full = jax.jit(jax.vmap(trainer.step, in_axes=(0, None, None)))
    ctx = objectives.TrainingContext()
    timings = {}
    for name, fn, args in (("forward_loss", fwd, (trainable, state.objective, state.step, xs, keys)),
                           ("loss_and_gradient", grad, (trainable, state.objective, state.step, xs, keys)),
                           ("full_step", full, (state, data, ctx))):
        jax.block_until_ready(fn(*args))
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            jax.block_until_ready(fn(*args))
            ts.append(time.perf_counter() - t)
        timings[name] = min(ts)
    return timings


def trainer_group_size(trainer, state, data) -> int:
    """Members vmapped together by ``trainer`` (its ``member_chunk``, "auto" resolved for this P and data)."""
    from hcjax.engine.population import auto_member_chunk, member_group_size, population_size

    chunk, p = trainer.settings.member_chunk, population_size(state)
    if chunk == "auto":
        chunk = auto_member_chunk(trainer.model, trainer.settings, p, data.shape[0])
    return member_group_size(p, chunk)


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def measure_population(shape, p, steps, repeats, with_torch, events, data_np):
    """Every implementation at population size p; returns a dict of results."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    data = jnp.asarray(data_np)
    res = {"P": p, "steps_per_call": steps}

    # (a) hcjax -------------------------------------------------------------
    trainer, state = jax_setup(shape, p, member_chunk=shape["member_chunk"])
    res["hcjax_group_size"] = trainer_group_size(trainer, state, data)
    jax.block_until_ready(state)
    c0, s0 = events.snapshot()
    t_first, (state, aux) = timed(lambda: jax.block_until_ready(trainer.train(state, data, steps)))
    c1, s1 = events.snapshot()
    res["hcjax_first_call_seconds"] = t_first
    res["hcjax_compile_events_first_call"] = c1 - c0
    res["hcjax_backend_compile_seconds"] = s1 - s0

    # (b) per-member jitted step, Python loop -------------------------------
    loop_run, loop_step = make_member_loop(shape, state, data)
    c0, s0 = events.snapshot()
    t_first_b, _ = timed(loop_run, 1)
    c1, s1 = events.snapshot()
    res["jax_loop_first_call_seconds"] = t_first_b
    res["jax_loop_compile_events_first_call"] = c1 - c0
    res["jax_loop_backend_compile_seconds"] = s1 - s0

    runners = {}

    def run_a():
        nonlocal state
        state, _ = trainer.train(state, data, steps)
        jax.block_until_ready(state)

    runners["hcjax"] = run_a
    if res["hcjax_group_size"] < p:  # (a') the same members in one vmap (member_chunk=None)
        trainer_v, state_v = jax_setup(shape, p, member_chunk=None)
        t_first_v, (state_v, _) = timed(lambda: jax.block_until_ready(trainer_v.train(state_v, data, steps)))
        res["hcjax_one_vmap_first_call_seconds"] = t_first_v

        def run_v():
            nonlocal state_v
            state_v, _ = trainer_v.train(state_v, data, steps)
            jax.block_until_ready(state_v)

        runners["hcjax_one_vmap"] = run_v
    runners["jax_loop"] = lambda: loop_run(steps)
    if with_torch:
        import torch

        tdata = torch.from_numpy(np.asarray(data_np))
        torch_loop = make_torch_loop(shape, p, tdata)
        torch_loop(1)  # warm-up (allocator, autograd graph caches)
        runners["torch_loop"] = lambda: torch_loop(steps)
        torch_vm = make_torch_vmap(shape, p, tdata)
        torch_vm(1)
        runners["torch_vmap"] = lambda: torch_vm(steps)

    raw = {k: [] for k in runners}
    c_before, _ = events.snapshot()
    hcjax_calls_before = c_before
    for _ in range(repeats):  # interleaved: every implementation once per repeat
        for name, fn in runners.items():
            if name == "hcjax":
                hcjax_calls_before = events.snapshot()[0]
            t, _ = timed(fn)
            if name == "hcjax":
                res.setdefault("hcjax_compile_events_later_calls", 0)
                res["hcjax_compile_events_later_calls"] += events.snapshot()[0] - hcjax_calls_before
            raw[name].append(t / steps)
    res["raw_seconds_per_step"] = raw
    res["seconds_per_step"] = {k: _common.median(v) for k, v in raw.items()}
    res["hcjax_cache_size"] = trainer.train_round._cache_size()
    res["hcjax_calls_after_first"] = repeats
    res["hcjax_compile_seconds_estimate"] = t_first - res["seconds_per_step"]["hcjax"] * steps
    return res, trainer, state, data


def hct_round_compiles(events):
    """Compile events per unit of a small real run_hct (rounds after the first must not compile)."""
    from hcjax.hct import HCTConfig, run_hct

    per_unit = []
    last = [events.snapshot()]

    def progress(ev):
        now = events.snapshot()
        per_unit.append({"unit": ev["unit"], "phase": ev["phase"], "compile_events": now[0] - last[0][0],
                         "compile_seconds": round(now[1] - last[0][1], 3)})
        last[0] = now

    cfg = HCTConfig.from_dict(dict(population_size=8, rounds=6, steps_per_round=50, num_pruned=2, final_steps=150,
                                   num_samples=2000, baselines=("vanilla",), certificate=True, seed=0))
    t = time.perf_counter()
    run_hct(cfg, progress=progress)
    nested = cfg.to_dict()
    return {"config": {k: nested[k] for k in ("population", "model", "final", "baselines")},
            "per_unit": per_unit, "wall_seconds": time.perf_counter() - t}


def memory_probe(shape, p, steps, donate=False):
    """Run in a fresh process: RSS before building the population, and peak RSS after compile + training.

    Also the peak after init and after compiling the training program (before it runs), which separate the
    compilers' one-time memory from the buffers that grow with P."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    _common.disable_persistent_cache()
    data = jnp.asarray(np.random.default_rng(0).standard_normal((shape["num_rows"], shape["data_dim"]),
                                                                dtype=np.float32))
    jax.block_until_ready(data)
    reset = _reset_peak_rss()  # Linux keeps ru_maxrss across fork+exec: the parent's peak would leak in
    before = _peak_rss_mb()
    trainer, state = jax_setup(shape, p, member_chunk=shape["member_chunk"])
    jax.block_until_ready(state)
    after_init = _peak_rss_mb()
    buffers = xla_buffer_sizes(trainer, state, data, steps, donate)  # compiles the program train runs
    after_compile = _peak_rss_mb()
    state, _ = trainer.train(state, data, steps, donate=donate)
    jax.block_until_ready(state)
    after = _peak_rss_mb()
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(state))
    return {"P": p, "group_size": trainer_group_size(trainer, state, data), "rss_before_mb": before,
            "peak_rss_mb": after, "peak_delta_mb": after - before, "peak_delta_after_init_mb": after_init - before,
            "peak_delta_after_compile_mb": after_compile - before, "population_state_mb": state_bytes / 2**20,
            "peak_reset": reset, "xla_buffers_mb": buffers}


def xla_buffer_sizes(trainer, state, data, steps, donate=False) -> dict:
    """What the compiled training program holds (XLA's memory analysis, MB): its arguments (state, data),
    outputs (new state, per-step aux), temporaries (activations, gradients, group copies) and aliased bytes."""
    from hcjax.engine.objectives import TrainingContext

    program = trainer.train_round_donating if donate else trainer.train_round
    compiled = program.lower(state, data, TrainingContext(), num_steps=steps).compile()
    m = compiled.memory_analysis()
    if m is None:
        return {}
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "alias_size_in_bytes",
              "generated_code_size_in_bytes")
    return {f.replace("_size_in_bytes", ""): getattr(m, f) / 2**20 for f in fields if hasattr(m, f)}


def run_memory_probe(args, p: int, chunk, donate: bool) -> dict:
    """:func:`memory_probe` for population ``p``, member_chunk ``chunk`` and ``Trainer.train(donate=...)`` in a
    fresh subprocess."""
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-probe", str(p), "--data-dim",
           str(args.data_dim), "--hidden", args.hidden, "--latent-dim", str(args.latent_dim), "--components",
           str(args.components), "--batch", str(args.batch), "--num-rows", str(args.num_rows),
           "--member-steps", str(args.member_steps), "--member-chunk", "none" if chunk is None else str(chunk)] + (["--donate"] if donate else [])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        return {"P": p, "member_chunk": chunk, "donate": donate, "error": out.stderr[-1000:]}
    return {"member_chunk": chunk, "donate": donate, **json.loads(out.stdout.strip().splitlines()[-1])}


def _reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    """Peak resident set size in MB: VmHWM from /proc/self/status, else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- main


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--populations", default="1,4,16,64,256", help="comma list of P")
    ap.add_argument("--data-dim", type=int, default=64)
    ap.add_argument("--hidden", default="256,256")
    ap.add_argument("--latent-dim", type=int, default=8)
    ap.add_argument("--components", type=int, default=8, help="J, GMM prior components")
    ap.add_argument("--member-chunk", default="auto", dest="member_chunk", type=_chunk_arg,
                    help="(a)'s TrainSettings.member_chunk: 'auto' (the library default), an int, or 'none'")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--num-rows", type=int, default=8192, help="rows of the shared training array")
    ap.add_argument("--member-steps", type=int, default=512,
                    help="member-steps per timed call: T = max(2, member_steps // P)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-hct-rounds", action="store_true")
    ap.add_argument("--wait-load", type=float, default=1.5, help="wait until the 1-min load is below this")
    ap.add_argument("--max-wait", type=float, default=1200.0)
    ap.add_argument("--name", default="population_throughput", help="output file stem in benchmarks/results")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (P=1,4; few steps); not for reporting")
    ap.add_argument("--memory-probe", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--donate", action="store_true", help=argparse.SUPPRESS)  # for --memory-probe
    return ap.parse_args(argv)


def _chunk_arg(text: str):
    """--member-chunk: 'auto', 'none' (one vmap) or a positive int."""
    if text in ("auto", "none"):
        return None if text == "none" else text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto', 'none' or a positive integer, got {text!r}")
    return value


def main(argv=None) -> int:
    args = parse(argv)
    shape = {"data_dim": args.data_dim, "hidden": [int(h) for h in args.hidden.split(",")],
             "latent_dim": args.latent_dim, "components": args.components, "batch": args.batch,
             "num_rows": args.num_rows, "elbo_samples": 1, "member_chunk": args.member_chunk}
    if args.memory_probe is not None:
        print(json.dumps(memory_probe(shape, args.memory_probe, max(2, args.member_steps // args.memory_probe),
                                      args.donate)))
        return 0
    populations = [int(p) for p in args.populations.split(",")]
    if args.quick:
        populations, args.member_steps, args.repeats = [1, 4], 16, 2
        args.name = args.name + "_quick"

    import numpy as np

    _common.disable_persistent_cache()
    with_torch = torch_available() and not args.no_torch
    gate = _common.wait_for_quiet(args.wait_load, args.max_wait) if not args.quick else {"skipped": True}
    events = _common.CompileEvents()
    t_start = time.time()
    payload = {"benchmark": "population_throughput", "machine": _common.machine_info(), "load_gate": gate,
               "load_before": _common.load(), "shape": shape,
               "torch": "measured" if with_torch else ("skipped: --no-torch" if args.no_torch else
                                                       "skipped: PyTorch not installed (pip install hcjax[bench])"),
               "command": "python benchmarks/population_throughput.py " + " ".join(argv or sys.argv[1:])}
    flops = analytic_flops(shape["data_dim"], shape["hidden"], shape["latent_dim"], shape["batch"])
    payload["flops_per_member_step"] = flops
    payload["matmul_rate_start"] = matmul_rate()
    if with_torch:
        payload["torch_matmul_rate"] = torch_matmul_rate()
    print(f"matmul rate (jnp.dot 2048^2 f32): {payload['matmul_rate_start']['gflops']:.1f} GFLOP/s; "
          f"model FLOPs per member-step {flops['total'] / 1e6:.1f} MFLOP (analytic, matmuls)", flush=True)

    data_np = np.random.default_rng(0).standard_normal((shape["num_rows"], shape["data_dim"]), dtype=np.float32)
    rows, results = [], []
    last = None
    for p in populations:
        steps = max(2, args.member_steps // p)
        res, trainer, state, data = measure_population(shape, p, steps, args.repeats, with_torch, events, data_np)
        sps = res["seconds_per_step"]
        a = sps["hcjax"]
        res["gflops_hcjax"] = flops["total"] * p / a / 1e9
        res["ratio_b_over_a"] = sps["jax_loop"] / a
        if "hcjax_one_vmap" in sps:  # (a'): one vmap over all P, against (a)'s groups
            v = sps["hcjax_one_vmap"]
            res["gflops_hcjax_one_vmap"] = flops["total"] * p / v / 1e9
            res["ratio_one_vmap_over_a"] = v / a
        if with_torch:
            res["ratio_c_over_a"] = sps["torch_loop"] / a
            res["ratio_d_over_a"] = sps["torch_vmap"] / a
        results.append(res)
        print(f"P={p:4d} T={steps:4d}  " + "  ".join(f"{k}={v * 1e3:9.2f} ms/step" for k, v in sps.items()) +
              f"  (b)/(a)={res['ratio_b_over_a']:.2f}" +
              (f"  (c)/(a)={res['ratio_c_over_a']:.2f}  (d)/(a)={res['ratio_d_over_a']:.2f}" if with_torch else "") +
              (f"  (a')/(a)={res['ratio_one_vmap_over_a']:.2f}  (a') {res['gflops_hcjax_one_vmap']:.1f} GFLOP/s"
               if "hcjax_one_vmap" in sps else "") +
              f"  hcjax (groups of {res['hcjax_group_size']}) {res['gflops_hcjax']:.1f} GFLOP/s, "
              f"compile {res['hcjax_backend_compile_seconds']:.2f}s, "
              f"later-call compiles {res['hcjax_compile_events_later_calls']}", flush=True)
        for name, t in sps.items():
            rows.append({"P": p, "implementation": name, "steps_per_call": steps, "seconds_per_step": t,
                         "member_steps_per_second": p / t, "speedup_of_hcjax": t / a,
                         "gflops": flops["total"] * p / t / 1e9,
                         "compile_seconds": res.get(f"{name}_backend_compile_seconds", "")})
        last = (trainer, state, data, p)
        if p == 16 or (p == populations[-1] and "xla_cost" not in payload):
            payload["xla_cost"] = xla_cost_flops(trainer, state, data)
    trainer, state, data, p_max = last
    payload["step_breakdown"] = {"P": p_max, "seconds": step_breakdown(shape, trainer, state, data)}
    payload["model_shaped_matmuls"] = model_shaped_matmuls(shape, p_max)
    del trainer, state, data
    payload["results"] = results
    payload["matmul_rate_end"] = matmul_rate()
    if not args.no_hct_rounds and not args.quick:
        payload["hct_round_compiles"] = hct_round_compiles(events)
    if not args.no_memory:
        mem = []
        for p in populations:
            # (a)'s setting, the same with the input state donated, then one vmap
            for chunk, donate in dict.fromkeys(((args.member_chunk, False), (args.member_chunk, True), (None, False))):
                mem.append(run_memory_probe(args, p, chunk, donate))
                print(f"memory P={p} member_chunk={chunk} donate={donate}: {mem[-1]}", flush=True)
        payload["memory"] = {"method": "peak RSS (VmHWM, reset at the start) in a fresh subprocess per P; "
                                       "delta = peak after init+compile+train minus RSS before building the "
                                       "population (jax imported, data on device)", "per_P": mem}
    payload["load_after"] = _common.load()
    payload["wall_seconds"] = time.time() - t_start
    jpath, cpath = _common.write_outputs(args.name, payload, rows)
    print(f"wrote {jpath} and {cpath}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
