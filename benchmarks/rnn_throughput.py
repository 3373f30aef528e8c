"""Throughput and memory of ``Feedback`` against Keras's recurrent layers.

One run prints, for every core (simple, gru, lstm) and hidden size, the
sequences/second of inference (``predict_on_batch``) and training
(``train_on_batch``, Adam, MSE on the last output) of

- ``keras.layers.SimpleRNN`` / ``GRU`` / ``LSTM``, compiled without and with
  ``jit_compile``;
- ``keras_feedback.layers.Feedback(core=..., feedback_units=0)`` (the same
  math, the fused XLA engine);
- ``Feedback`` with feedback on (``feedback_units=units``).

Each row gives its ratio to the best Keras figure of the same core, size and
mode, and its achieved GFLOP/s (model FLOPs, no recomputation counted) as a
fraction of a large fp32 matmul measured in the same run. Then the peak
memory one training step adds at T=1000 (peak resident set size, Linux),
each configuration in a fresh subprocess (see ``peak_memory``).

    python benchmarks/rnn_throughput.py            # B=64 T=100 D=32, H=128,512
    python benchmarks/rnn_throughput.py --quick    # tiny smoke run
    python benchmarks/rnn_throughput.py --units 128 --cores gru --repeats 5
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_feedback  # noqa: E402

KERAS_LAYERS = {"simple": "SimpleRNN", "gru": "GRU", "lstm": "LSTM"}
GATES = {"simple": 1, "gru": 3, "lstm": 4}


def build(kind, core, units, time_steps, features, jit_compile):
    """A one-layer model (last output) compiled with Adam and MSE."""
    if kind == "keras":
        layer = getattr(keras.layers, KERAS_LAYERS[core])(units)
    else:
        feedback_units = 0 if kind == "feedback_off" else units
        layer = keras_feedback.layers.Feedback(
            units, core=core, feedback_units=feedback_units
        )
    model = keras.Sequential([keras.Input((time_steps, features)), layer])
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4), loss="mse", jit_compile=jit_compile
    )
    return model


def flops_per_sequence(kind, core, units, time_steps, features):
    """Forward multiply-adds x2 of the matmuls; training counts 3x forward."""
    width = GATES[core] * units
    per_step = 2 * (features + units) * width
    if kind == "feedback":
        per_step += 2 * units * width + 2 * units * units  # U_c and W_c
    return per_step * time_steps


def timed(fn, repeats, min_seconds):
    """Best time of one call over ``repeats`` rounds (after a warm-up)."""
    fn()
    fn()
    best = float("inf")
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        best = min(best, elapsed / calls)
    return best


def matmul_gflops(size=2048, repeats=5):
    a = tf.random.normal([size, size])
    b = tf.random.normal([size, size])
    matmul = tf.function(lambda: tf.matmul(a, b))
    seconds = timed(lambda: matmul().numpy(), repeats, 0.2)
    return 2 * size**3 / seconds / 1e9


def step_matmul_loop_gflops(batch, units, gates, time_steps, shards, repeats):
    """GFLOP/s of a bare XLA-compiled loop of a recurrence's per-step
    matmuls, ``h <- (h @ U)[:, :units]`` with ``U`` of ``(units, gates *
    units)``, run as ``shards`` loops side by side on parts of the batch (as
    the fused engine runs its shards). Any exact step-by-step implementation
    does at least this work per step, in sequence: an upper bound of what a
    recurrence can reach on this machine with XLA's matmuls (the input
    projection, one large matmul, and the step's elementwise work left out).
    """
    rows = batch // shards
    kernel = tf.random.normal([units, gates * units]) / units**0.5

    @tf.function(jit_compile=True)
    def loop(h):
        def body(t, h):
            return t + 1, tf.matmul(h, kernel)[:, :units]

        return tf.while_loop(lambda t, h: t < time_steps, body, (0, h))[1]

    starts = [tf.random.normal([rows, units]) for _ in range(shards)]
    run = tf.function(lambda: [loop(h) for h in starts])
    seconds = timed(lambda: [r.numpy() for r in run()], repeats, 0.2)
    flops = 2 * rows * shards * units * gates * units * time_steps
    return flops / seconds / 1e9


def target_rows(rows, args, reference_gflops):
    """What 1.5x the best Keras figure asks of the machine, per core, size
    and mode: the model GFLOP/s it means, as a fraction of the large matmul
    and (inference) of the bare loop of per-step matmuls, best of one loop
    and of one loop per core side by side."""
    shard_options = sorted({1, max(1, min(os.cpu_count() or 1, args.batch // 8))})
    targets = []
    for units in args.units:
        for core in args.cores:
            loop = max(
                step_matmul_loop_gflops(
                    args.batch, units, GATES[core], args.time, n, args.repeats
                )
                for n in shard_options
            )
            for mode in ("inference", "training"):
                measured = [
                    r
                    for r in rows
                    if (r["core"], r["units"], r["mode"]) == (core, units, mode)
                ]
                keras_best = max(
                    (r for r in measured if r["kind"] == "keras"),
                    key=lambda r: r["seq_per_s"],
                )
                ours = next(r for r in measured if r["kind"] == "feedback_off")
                needed = 1.5 * keras_best["gflops"]
                targets.append(
                    dict(
                        core=core,
                        units=units,
                        mode=mode,
                        needed=needed,
                        of_matmul=needed / reference_gflops,
                        loop=loop if mode == "inference" else None,
                        ours=ours["gflops"] / reference_gflops,
                    )
                )
    return targets


def throughput_rows(args, units, reference_gflops):
    rng = np.random.default_rng(0)
    batch, time_steps, features = args.batch, args.time, args.features
    x = rng.standard_normal((batch, time_steps, features)).astype("float32")
    y = rng.standard_normal((batch, units)).astype("float32")
    variants = [
        ("keras", "Keras", False),
        ("keras", "Keras jit", True),
        ("feedback_off", "Feedback fb=0", False),
        ("feedback", "Feedback fb=H", False),
    ]
    rows = []
    for core in args.cores:
        measured = []
        for kind, label, jit in variants:
            model = build(kind, core, units, time_steps, features, jit)
            flops = flops_per_sequence(kind, core, units, time_steps, features)
            for mode, fn, factor in (
                ("inference", lambda: model.predict_on_batch(x), 1),
                ("training", lambda: model.train_on_batch(x, y), 3),
            ):
                seconds = timed(fn, args.repeats, args.min_seconds)
                measured.append(
                    dict(
                        core=core,
                        units=units,
                        mode=mode,
                        model=label,
                        kind=kind,
                        seq_per_s=batch / seconds,
                        gflops=factor * flops * batch / seconds / 1e9,
                    )
                )
            keras.backend.clear_session()
        for row in measured:
            best_keras = max(
                r["seq_per_s"]
                for r in measured
                if r["kind"] == "keras" and r["mode"] == row["mode"]
            )
            row["vs_best_keras"] = row["seq_per_s"] / best_keras
            row["of_matmul"] = row["gflops"] / reference_gflops
            rows.append(row)
    return rows


_MEMORY_PROBE = """
import ctypes, json, sys
import numpy as np
sys.path.insert(0, {here!r})
import rnn_throughput as b

def status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key))

m = b.build({kind!r}, {core!r}, {units}, {time}, {features}, False)
x = np.random.rand({batch}, {time}, {features}).astype("float32")
y = np.random.rand({batch}, {units}).astype("float32")
peaks = []
for _ in range({steps}):
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak resident size (VmHWM) to the current one
    before = status("VmRSS:")
    m.train_on_batch(x, y)
    peaks.append(status("VmHWM:") - before)
print(json.dumps(peaks))
"""


MEMORY_STEPS = 4


def peak_memory(kind, core, units, args):
    """Peak resident memory a training step adds: ``(first, steady)``.

    In a fresh process, for each of ``MEMORY_STEPS`` training steps: the
    peak resident size during the step minus the resident size just before
    it. ``first`` is the process's first step, which also holds what the
    process sets up once (function tracing for both libraries; for the
    fused engine, loading its compiled XLA executables: XLA's persistent
    cache, filled by a first process, keeps compilation itself out of the
    measured one). ``steady`` is the last step, what every further step of
    a training run adds. glibc is made to return every freed block of 64
    KiB or more to the system at once (``MALLOC_MMAP_THRESHOLD_``), so that
    memory a step frees and the next step allocates again is counted by
    each step rather than hidden in the allocator.
    """
    code = _MEMORY_PROBE.format(
        here=os.path.dirname(os.path.abspath(__file__)),
        kind=kind,
        core=core,
        units=units,
        time=args.memory_time,
        features=args.features,
        batch=args.batch,
        steps=MEMORY_STEPS,
    )
    with tempfile.TemporaryDirectory() as cache:
        env = dict(
            os.environ,
            TF_XLA_FLAGS=f"--tf_xla_persistent_cache_directory={cache}",
            MALLOC_MMAP_THRESHOLD_="65536",
        )
        # The fused engine's first process fills the compilation cache.
        for _ in range(1 if kind == "keras" else 2):
            out = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
    peaks = json.loads(out.stdout.strip().splitlines()[-1])
    return peaks[0], peaks[-1]


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [
                line.split(":", 1)[1].strip() for line in f if "model name" in line
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}, Python {platform.python_version()}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--time", type=int, default=100)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--units", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--cores", nargs="+", default=["simple", "gru", "lstm"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=0.5)
    parser.add_argument("--memory-time", type=int, default=1000)
    parser.add_argument("--memory-units", type=int, default=128)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny smoke run: B=8 T=10 D=4 H=16, one repeat, memory at T=50",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.time, args.features, args.units = 8, 10, 4, [16]
        args.repeats, args.min_seconds = 1, 0.05
        args.memory_time, args.memory_units = 50, 16
    for core in args.cores:
        if core not in KERAS_LAYERS:
            parser.error(
                f"--cores: expected some of {tuple(KERAS_LAYERS)}, got {core!r}"
            )

    print(f"Machine: {machine()}")
    gflops = matmul_gflops(256 if args.quick else 2048)
    print(f"Reference: fp32 matmul {gflops:.1f} GFLOP/s")
    print(f"B={args.batch} T={args.time} D={args.features}; seq/s (higher is better)")
    header = (
        f"| {'core':6} | {'H':>4} | {'mode':9} | {'model':14} | {'seq/s':>9} "
        f"| {'vs best Keras':>13} | {'GFLOP/s':>7} | {'of matmul':>9} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    rows = []
    for units in args.units:
        for r in throughput_rows(args, units, gflops):
            rows.append(r)
            print(
                f"| {r['core']:6} | {r['units']:>4} | {r['mode']:9} | {r['model']:14} "
                f"| {r['seq_per_s']:>9.0f} | {r['vs_best_keras']:>12.2f}x "
                f"| {r['gflops']:>7.1f} | {r['of_matmul']:>8.1%} |"
            )
    print(
        "\nWhat 1.5x the best Keras figure needs: model GFLOP/s, as a fraction "
        "of the fp32 matmul and of a bare XLA loop of the step's matmuls "
        "(inference; see step_matmul_loop_gflops)"
    )
    print(
        "| core   |    H | mode      | needs GFLOP/s | of matmul | bare loop "
        "| Feedback fb=0 |"
    )
    print(
        "|--------|------|-----------|---------------|-----------|-----------"
        "|---------------|"
    )
    for t in target_rows(rows, args, gflops):
        loop = "" if t["loop"] is None else f"{t['loop'] / gflops:.1%}"
        print(
            f"| {t['core']:6} | {t['units']:>4} | {t['mode']:9} "
            f"| {t['needed']:>13.1f} | {t['of_matmul']:>9.1%} | {loop:>9} "
            f"| {t['ours']:>13.1%} |"
        )
    if args.no_memory:
        return 0
    print(
        f"\nPeak memory a training step adds, B={args.batch} T={args.memory_time} "
        f"D={args.features} H={args.memory_units} (MiB): the first step of a "
        f"process and step {MEMORY_STEPS} (steady state); see peak_memory"
    )
    print(
        "| core   | Keras first | Feedback fb=0 first | ratio "
        "| Keras steady | Feedback fb=0 steady | ratio |"
    )
    print(
        "|--------|-------------|---------------------|-------"
        "|--------------|----------------------|-------|"
    )
    for core in args.cores:
        keras_first, keras_steady = peak_memory("keras", core, args.memory_units, args)
        first, steady = peak_memory("feedback_off", core, args.memory_units, args)
        print(
            f"| {core:6} | {keras_first / 2**20:11.1f} | {first / 2**20:19.1f} "
            f"| {first / keras_first:5.2f} | {keras_steady / 2**20:12.1f} "
            f"| {steady / 2**20:20.1f} | {steady / keras_steady:5.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
