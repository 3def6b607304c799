"""Markdown tables for benchmarks/README.md from the JSON files in benchmarks/results.

    python benchmarks/tables.py            # prints the tables (pasted into benchmarks/README.md)

Reads ``population_throughput.json``, ``population_throughput_small.json`` and
``em_clustering.json`` when present; every number printed is a value (or a
ratio of values) stored in those files by the benchmark scripts.
"""

from __future__ import annotations

import json
import os
import sys

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
IMPLS = (("hcjax", "(a) hcjax (auto groups)"), ("hcjax_one_vmap", "(a') hcjax, one vmap"), ("jax_loop", "(b) JAX loop"),
         ("torch_loop", "(c) torch loop"), ("torch_vmap", "(d) torch.func.vmap"))


def _load(name):
    path = os.path.join(RESULTS, f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def throughput(name: str) -> list[str]:
    d = _load(name)
    if d is None:
        return [f"({name}.json not found)"]
    s, fl = d["shape"], d["flops_per_member_step"]
    rate = d["matmul_rate_start"]["gflops"]
    lines = [f"### `{name}`", "",
             f"Shape: data {s['data_dim']}, MLP hidden {s['hidden']}, latent {s['latent_dim']}, GMM prior with "
             f"J = {s['components']} (Monte Carlo KL, 1 sample), batch {s['batch']} per member, Adam + clipping; "
             f"{fl['num_params']} parameters and {fl['total'] / 1e6:.1f} MFLOP (matmuls, forward + backward) per "
             f"member-step. Matmul rate in the same run: {rate:.1f} GFLOP/s at the start, "
             f"{d['matmul_rate_end']['gflops']:.1f} at the end (jitted 2048 x 2048 float32 `jnp.dot`). "
             f"Command: `{d['command'].strip()}`.", "",
             "Milliseconds per population step (median of interleaved repeats; T steps per timed call):", "",
             "| P | T | group | " + " | ".join(label for _, label in IMPLS) + " | (b)/(a) | (c)/(a) | (d)/(a) | "
             "(a')/(a) | (a) GFLOP/s (% of matmul) | compile (a) s |",
             "|" + "---|" * (len(IMPLS) + 9)]
    for r in d["results"]:
        sps = r["seconds_per_step"]
        cells = [f"{sps[k] * 1e3:.2f}" if k in sps else "-" for k, _ in IMPLS]
        a = sps["hcjax"]
        gf_a = fl["total"] * r["P"] / a / 1e9
        ratio = lambda num: f"{sps[num] / a:.2f}" if num in sps else "-"  # noqa: E731
        lines.append(f"| {r['P']} | {r['steps_per_call']} | {r.get('hcjax_group_size', '-')} | " + " | ".join(cells) +
                     f" | {ratio('jax_loop')} | {ratio('torch_loop')} | {ratio('torch_vmap')} | "
                     f"{ratio('hcjax_one_vmap')} | {gf_a:.1f} ({100 * gf_a / rate:.0f}%) | "
                     f"{r['hcjax_backend_compile_seconds']:.2f} |")
    lines.append("")
    if "step_breakdown" in d:
        b = d["step_breakdown"]
        sec = b["seconds"]
        lines.append(f"One vmapped step at P = {b['P']}, jitted alone (no scan): forward loss "
                     f"{sec['forward_loss'] * 1e3:.0f} ms, loss + gradient {sec['loss_and_gradient'] * 1e3:.0f} ms, "
                     f"full step (+ Adam, clipping, bookkeeping) {sec['full_step'] * 1e3:.0f} ms. The model's matmuls "
                     f"alone, batched over the same P: {d['model_shaped_matmuls']['gflops']:.1f} GFLOP/s.")
    if "xla_cost" in d:
        x = d["xla_cost"]
        lines.append(f"XLA's cost analysis: {x['flops_per_member_step'] / 1e6:.1f} MFLOP and "
                     f"{x['bytes_accessed_per_member_step'] / 1e6:.1f} MB accessed per member-step "
                     f"(analytic matmul count {fl['total'] / 1e6:.1f} MFLOP).")
    if "memory" in d:
        mem = [m for m in d["memory"]["per_P"] if "error" not in m]
        lines += ["", "Peak memory (fresh process per row; MB above the process before the population was built):", "",
                  "| P | member groups | donated | state | peak | peak / state | after init | after compile | "
                  "XLA arguments / outputs / temporaries / aliased |", "|---|---|---|---|---|---|---|---|---|"]
        for m in mem:
            x = m.get("xla_buffers_mb", {})
            xla = " / ".join(f"{x[k]:.0f}" for k in ("argument", "output", "temp", "alias")) if x else "-"
            lines.append(f"| {m['P']} | {m.get('group_size', '-')} | {'yes' if m.get('donate') else 'no'} | "
                         f"{m['population_state_mb']:.1f} | {m['peak_delta_mb']:.0f} | "
                         f"{m['peak_delta_mb'] / m['population_state_mb']:.2f} | "
                         f"{m.get('peak_delta_after_init_mb', float('nan')):.0f} | "
                         f"{m.get('peak_delta_after_compile_mb', float('nan')):.0f} | {xla} |")
    if "hct_round_compiles" in d:
        units = d["hct_round_compiles"]["per_unit"]
        lines += ["", "Compile events per unit of a real `run_hct` (6 rounds, then the final phase): " +
                  ", ".join(f"{u['unit']}:{u['compile_events']}" for u in units) + "."]
    lines.append("")
    return lines


def em() -> list[str]:
    d = _load("em_clustering")
    if d is None:
        return ["(em_clustering.json not found)"]
    s = d["shape"]
    lines = ["### `em_clustering`", "",
             f"N = {s['N']} points, d = {s['d']}, J = {s['J']} diagonal components, {s['iters']} EM iterations, "
             f"k-means++ seeding. Command: `{d['command'].strip()}`.", "",
             "| M | JAX vmapped, ms | scikit-learn loop, ms | sklearn / JAX | JAX compile s | mean log-lik JAX / sklearn |",
             "|---|---|---|---|---|---|"]
    for r in d["results"]:
        ll = r["mean_log_likelihood"]
        lines.append(f"| {r['M']} | {r['seconds']['jax'] * 1e3:.1f} | {r['seconds']['sklearn'] * 1e3:.1f} | "
                     f"{r['ratio_sklearn_over_jax']:.2f} | {r['jax_backend_compile_seconds']:.2f} | "
                     f"{ll['jax']:.4f} / {ll['sklearn']:.4f} |")
    lines.append("")
    return lines


def main() -> int:
    out = throughput("population_throughput") + throughput("population_throughput_small") + em()
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
