"""GPU check (issue 14): CUDA loss tensors appended every step, with system metrics on.

    python benchmarks/gpu_check.py                  # a machine with a CUDA GPU; 1-2 minutes
    python benchmarks/gpu_check.py --max-overhead 2 # the step-time goal, in percent (default 1)

The same CUDA MLP training step runs in three loops, interleaved over rounds so
that drift (clocks, temperature) hits each alike:

- ``none``:   no logging at all
- ``mldash``: ``exp.metrics("loss").append(value=loss, step=i)`` with the CUDA loss
  tensor itself (no ``.item()``), system metrics on (sampled every second, not the
  default 10 s, so each round holds several GPU samples)
- ``item``:   ``loss.item()`` every step, what reading the value on the training
  thread costs (it waits for the GPU every step)

It prints the step time of each, the overhead over ``none`` (median of the rounds'
paired ratios), and checks: every loss point stored, finite, the last equal to the
last loss; ``sys/gpu/0`` present with its fields and nonzero utilization; the
overhead within the goal. Exit 0 on success, 1 on a failed check; without CUDA it
says SKIP and exits 0.
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

GPU_FIELDS = ("utilization_percent", "memory_used_bytes", "memory_total_bytes", "temperature_c", "power_w",
              "sm_clock_mhz", "memory_clock_mhz", "throttle_reasons", "nvml_index")
REQUIRED = ("utilization_percent", "memory_used_bytes", "memory_total_bytes")
SAMPLE_EVERY = 1.0
BUDGET = 150.0  # seconds: stop adding rounds past this, to end well within 3 minutes


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-overhead", type=float, default=1.0, help="step-time goal for mldash, percent")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="per loop per round")
    parser.add_argument("--cpu", action="store_true", help="a dry run of this script on the CPU (no GPU checks)")
    args = parser.parse_args()
    began = time.monotonic()
    try:
        import torch
    except ImportError:
        print("SKIP: torch is not installed")
        return 0
    if not torch.cuda.is_available() and not args.cpu:
        print(f"SKIP: torch.cuda is not available (torch {torch.__version__}); run this on a machine with a CUDA GPU")
        return 0

    import mldash
    from mldash._system import SystemSampler

    wired = "system_metrics" in inspect.signature(mldash.Experiment).parameters
    device = torch.device("cpu" if args.cpu else "cuda:0")
    sync = (lambda: None) if args.cpu else torch.cuda.synchronize
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    width, depth, batch = (256, 2, 64) if args.cpu else (4096, 4, 512)
    layers: list = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.GELU()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    x = torch.randn(batch, width, device=device)
    y = torch.randn(batch, 1, device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    for _ in range(30):  # warm-up: kernels chosen, allocator filled
        step()
    sync()
    t = time.perf_counter()
    for _ in range(50):
        step()
    sync()
    per_step = (time.perf_counter() - t) / 50
    steps = max(200, min(20_000, int(args.seconds / per_step)))
    name = "CPU (dry run)" if args.cpu else torch.cuda.get_device_name(device)
    print(f"{name}, torch {torch.__version__}, MLP {depth}x{width}, batch {batch}: "
          f"{per_step * 1e3:.3f} ms/step, {steps} steps per loop, system metrics "
          f"{'through Experiment(system_metrics=)' if wired else 'through SystemSampler (not wired yet)'}")

    root = tempfile.mkdtemp(prefix="mldash-gpu-check-")
    last: dict = {}

    def loop_none(_round: int) -> float:
        sync()
        t = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        return time.perf_counter() - t

    def loop_item(_round: int) -> float:
        sync()
        t = time.perf_counter()
        for _ in range(steps):
            step().item()
        sync()
        return time.perf_counter() - t

    def loop_mldash(round_: int) -> float:
        options = {"system_metrics": SAMPLE_EVERY} if wired else {}
        exp = mldash.Experiment(f"gpu-check/round-{round_}", root=root, **options).start()
        sampler = None if wired else SystemSampler(SAMPLE_EVERY, exp.metrics, exp.root).start()
        loss_series = exp.metrics("loss")
        sync()
        t = time.perf_counter()
        for i in range(steps):
            loss = step()
            loss_series.append(value=loss, step=i)
        sync()
        seconds = time.perf_counter() - t
        if sampler is None:  # wired: the Experiment's own sampler, wherever it keeps it
            sampler = next((v for v in vars(exp).values() if isinstance(v, SystemSampler)), None)
        if sampler is not None and not wired:
            sampler.stop()
        exp.finish()
        last.update(exp=exp, loss=loss.item(), sampler=sampler)
        return seconds

    loops = {"none": loop_none, "mldash": loop_mldash, "item": loop_item}
    times: dict[str, list[float]] = {k: [] for k in loops}
    for round_ in range(args.rounds):
        if round_ >= 2 and time.monotonic() - began > BUDGET:
            print(f"time budget reached after {round_} rounds")
            break
        order = list(loops)[round_ % 3:] + list(loops)[:round_ % 3]
        for key in order:
            times[key].append(loops[key](round_) / steps)

    failures: list[str] = []
    print("\n| loop | ms/step (median) | overhead over none |")
    print("|---|---:|---:|")
    overhead = {}
    for key in loops:
        ratios = [a / b for a, b in zip(times[key], times["none"], strict=True)]
        overhead[key] = (statistics.median(ratios) - 1) * 100
        print(f"| {key} | {statistics.median(times[key]) * 1e3:.4f} | "
              f"{'-' if key == 'none' else f'{overhead[key]:+.2f} %'} |")
    print(f"\nrounds: {len(times['none'])}; per-round ms/step: "
          + "; ".join(f"{k} " + ", ".join(f"{v * 1e3:.3f}" for v in vs) for k, vs in times.items()))
    if overhead["mldash"] > args.max_overhead and not args.cpu:
        failures.append(f"mldash step-time overhead {overhead['mldash']:+.2f} % is over the goal of "
                        f"{args.max_overhead:g} %")

    exp = last["exp"]
    points = exp.metrics("loss").read(start_index=0, limit=steps)
    values = [p["data"]["value"] for p in points["data"]]
    if points["total"] != steps or len(values) != steps:
        failures.append(f"loss: {points['total']} points stored, {steps} appended")
    if not all(isinstance(v, float) and math.isfinite(v) for v in values):
        failures.append("loss: a stored value is not a finite float")
    elif values and not math.isclose(values[-1], last["loss"], rel_tol=1e-6):
        failures.append(f"loss: last stored {values[-1]!r}, last computed {last['loss']!r}")

    names = exp.metric_names()
    gpu = [p["data"] for p in exp.metrics("sys/gpu/0").read(limit=10_000)["data"]] if "sys/gpu/0" in names else []
    print(f"\nsystem series: {', '.join(n for n in names if n.startswith('sys/'))}; sys/gpu/0: {len(gpu)} points")
    if args.cpu:
        print("sys/gpu/0 checks skipped: a dry run on the CPU")
    elif not gpu:
        failures.append("sys/gpu/0 has no points")
    else:
        present = {f for p in gpu for f in p}
        print("sys/gpu/0 fields: " + ", ".join(f"{f} {'ok' if f in present else 'MISSING'}" for f in GPU_FIELDS))
        print("sys/gpu/0 last point: " + ", ".join(f"{k}={v}" for k, v in gpu[-1].items()))
        missing = [f for f in REQUIRED if f not in present]
        if missing:
            failures.append(f"sys/gpu/0 lacks {', '.join(missing)}")
        utilization = [p.get("utilization_percent", 0) for p in gpu]
        print(f"utilization_percent over the loop: {utilization}")
        if max(utilization, default=0) <= 0:
            failures.append("sys/gpu/0 utilization_percent is never above 0")
    sampler = last["sampler"]
    if sampler is not None and sampler.samples > 1:
        per = sampler.cpu_seconds / sampler.samples
        print(f"sampler: {sampler.samples} samples, {per * 1e6:,.0f} µs CPU per sample, the first (NVML's start) "
              f"included (= {per / 10 * 100:.4f} % of a core at 10 s); problems: {sampler.problems or 'none'}")

    elapsed = time.monotonic() - began
    print(f"\n{'PASS' if not failures else 'FAIL'} in {elapsed:.0f} s"
          + "".join(f"\n  - {failure}" for failure in failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
