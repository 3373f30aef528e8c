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
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_feedback  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _limits  # noqa: E402

KERAS_LAYERS = {"simple": "SimpleRNN", "gru": "GRU", "lstm": "LSTM"}
GATES = {"simple": 1, "gru": 3, "lstm": 4}
POLICY_DTYPES = {
    "float32": "float32",
    "mixed_bfloat16": "bfloat16",
    "mixed_float16": "float16",
}


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


def targets(rows, args, matmul):
    """Issue 14's targets against this run's limits, per policy, core, size
    and mode: our model GFLOP/s; what 1.5x the best Keras figure under the
    same policy needs; the bare loop of the step's matmuls (``_limits``,
    best of both kernels and the shard options) and both as a fraction of
    it; ours as a fraction of ``matmul`` (the best large fp32 matmul)."""
    found = []
    for policy in args.policies:
        dtype = POLICY_DTYPES[policy]
        cores = args.cores if policy == "float32" else args.mixed_cores
        for units in args.units:
            for core in cores:
                limits = _limits.loop_limits(args, units, GATES[core], dtype)
                for mode in ("inference", "training"):
                    measured = [
                        r
                        for r in rows
                        if (r["policy"], r["core"], r["units"], r["mode"])
                        == (policy, core, units, mode)
                    ]
                    keras_best = max(
                        (r for r in measured if r["kind"] == "keras"),
                        key=lambda r: r["seq_per_s"],
                    )
                    ours = next(r for r in measured if r["kind"] == "feedback_off")
                    loop, how = limits[mode]
                    found.append(
                        dict(
                            policy=policy,
                            core=core,
                            units=units,
                            mode=mode,
                            ours=ours["gflops"],
                            ratio=ours["vs_best_keras"],
                            needed=1.5 * keras_best["gflops"],
                            loop=loop,
                            how=how,
                            of_matmul=ours["gflops"] / matmul,
                            loop_of_matmul=loop / matmul,
                        )
                    )
    return found


def throughput_rows(args, units, reference_gflops, policy="float32"):
    """Every variant's rows for each core at ``units``: the four models of a
    core are built together and timed in turns (one window each per round,
    best of ``args.repeats`` rounds), so that a machine whose speed drifts
    during the run shifts them alike rather than the ratios between them."""
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
                ("inference", lambda m=model: m.predict_on_batch(x), 1),
                ("training", lambda m=model: m.train_on_batch(x, y), 3),
            ):
                measured.append(
                    dict(
                        policy=policy,
                        core=core,
                        units=units,
                        mode=mode,
                        model=label,
                        kind=kind,
                        fn=fn,
                        flops=factor * flops * batch,
                        seconds=_limits.timed(fn, 0, 0),
                    )
                )
        for _ in range(args.repeats):
            for row in measured:
                if row["seconds"] <= 2.0:  # else timed once (``timed``)
                    seconds = _limits.window(row["fn"], args.min_seconds)
                    row["seconds"] = min(row["seconds"], seconds)
        keras.backend.clear_session()
        for row in measured:
            del row["fn"]
            row["seq_per_s"] = batch / row["seconds"]
            row["gflops"] = row.pop("flops") / row["seconds"] / 1e9
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


_FIRST_CALLS = """
import json, os, sys, time
start = time.perf_counter()
import keras, numpy as np
import keras_feedback
kind = {kind!r}
rng = np.random.default_rng(0)
x = rng.standard_normal((320, 20, 8)).astype("float32")
y = rng.standard_normal((320, 1)).astype("float32")

def model():
    layer = (keras.layers.LSTM(32) if kind == "keras" else
             keras_feedback.layers.Feedback(32, core="lstm", feedback_units=0))
    m = keras.Sequential([keras.Input((None, 8)), layer, keras.layers.Dense(1)])
    m.compile("adam", "mse")
    return m

m = model()
t = time.perf_counter(); m.predict(x, batch_size=32, verbose=0)
first_predict = time.perf_counter() - t
m = model()
t = time.perf_counter(); m.fit(x, y, batch_size=32, epochs=1, verbose=0)
first_epoch = time.perf_counter() - t
t = time.perf_counter(); m.predict(x[:, :13], batch_size=32, verbose=0)
new_length = time.perf_counter() - t
print(json.dumps([first_predict, first_epoch, new_length]))
"""

_VARYING = """
import json, os, sys, time
import keras, numpy as np, tensorflow as tf
import keras_feedback
kind = {kind!r}
rng = np.random.default_rng(0)
lengths = rng.permutation(np.arange(10, 210))[:{batches}]
def batches():
    for t in lengths:
        yield (rng.standard_normal((32, t, 8)).astype("float32"),
               rng.standard_normal((32, 1)).astype("float32"))
data = tf.data.Dataset.from_generator(batches, output_signature=(
    tf.TensorSpec((32, None, 8)), tf.TensorSpec((32, 1))))
layer = (keras.layers.LSTM(32) if kind == "keras" else
         keras_feedback.layers.Feedback(32, core="lstm", feedback_units=0))
m = keras.Sequential([keras.Input((None, 8)), layer, keras.layers.Dense(1)])
m.compile("adam", "mse")
t = time.perf_counter(); m.fit(data, epochs=1, verbose=0)
print(json.dumps([time.perf_counter() - t, len(set(lengths.tolist()))]))
"""


def _fresh_process(code, cache=None):
    """The JSON a probe prints in a fresh Python process; ``cache``: XLA's
    persistent compilation cache folder (one file per compiled executable)."""
    env = dict(os.environ)
    if cache is not None:
        env["TF_XLA_FLAGS"] = f"--tf_xla_persistent_cache_directory={cache}"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def first_call_rows(repeats):
    """First ``predict``, first ``fit`` epoch, first call at a new length of a
    small model (LSTM 32 units, T=20, D=8, batch 32, 320 examples), each
    process fresh, best of ``repeats``: Keras's LSTM against Feedback."""
    best = {}
    for kind in ("keras", "feedback"):
        runs = [_fresh_process(_FIRST_CALLS.format(kind=kind)) for _ in range(repeats)]
        best[kind] = [min(r[i] for r in runs) for i in range(3)]
    return best


def varying_length_rows(batches):
    """One epoch over ``batches`` batches of 32, each of another length drawn
    from 10..209, in a fresh process: wall time, and for Feedback the
    number of XLA executables compiled (files of a fresh persistent cache)."""
    results = {}
    for kind in ("keras", "feedback"):
        with tempfile.TemporaryDirectory() as cache:
            seconds, lengths = _fresh_process(
                _VARYING.format(kind=kind, batches=batches), cache
            )
            results[kind] = (seconds, lengths, len(os.listdir(cache)))
    return results


machine = _limits.machine


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
        "--policies",
        nargs="+",
        default=["float32", "mixed_bfloat16", "mixed_float16"],
        help="Keras dtype policies; the mixed ones run for --mixed-cores",
    )
    parser.add_argument("--mixed-cores", nargs="+", default=["gru", "lstm"])
    parser.add_argument("--no-first-calls", action="store_true")
    parser.add_argument("--varying-batches", type=int, default=200)
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
    limits = _limits.machine_limits(args)
    print("\nThe machine's matmul rates in this run (GFLOP/s)")
    print(
        f"| dtype    | kernel     | large  | step shape (B x H by H x 4H, H={max(args.units)}) |"
    )
    print("|----------|------------|--------|------------|")
    for r in limits:
        print(
            f"| {r['dtype']:8} | {r['kernel']:10} | {r['large']:6.0f} | {r['step']:10.0f} |"
        )
    gflops = max(r["large"] for r in limits if r["dtype"] == "float32")
    print(f"Reference: best fp32 matmul {gflops:.1f} GFLOP/s\n")
    print(f"B={args.batch} T={args.time} D={args.features}; seq/s (higher is better)")
    header = (
        f"| {'core':6} | {'H':>4} | {'mode':9} | {'model':14} | {'seq/s':>9} "
        f"| {'vs best Keras':>13} | {'GFLOP/s':>7} | {'of matmul':>9} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    rows = []
    all_cores = args.cores
    for policy in args.policies:
        keras.config.set_dtype_policy(policy)
        args.cores = all_cores if policy == "float32" else args.mixed_cores
        if policy != "float32":
            print(f"| {policy} (ours vs the best Keras under the same policy) |")
        for units in args.units:
            for r in throughput_rows(args, units, gflops, policy):
                rows.append(r)
                print(
                    f"| {r['core']:6} | {r['units']:>4} | {r['mode']:9} "
                    f"| {r['model']:14} | {r['seq_per_s']:>9.0f} "
                    f"| {r['vs_best_keras']:>12.2f}x "
                    f"| {r['gflops']:>7.1f} | {r['of_matmul']:>8.1%} |"
                )
    keras.config.set_dtype_policy("float32")
    args.cores = all_cores
    print(
        "\nIssue 14's targets against this run's limits: model GFLOP/s of "
        "Feedback fb=0 (ours), its ratio to the best Keras figure, what 1.5x "
        "that figure needs, the best bare loop of the step's matmuls in the "
        "policy's compute dtype (_limits.loop_limits: kernel x loops side by "
        "side) and both as a fraction of it, and ours and the bare loop as a "
        "fraction of the best large fp32 matmul"
    )
    print(
        "| policy | core | H | mode | ours | vs Keras | 1.5x needs | bare loop "
        "| how | ours of loop | needs of loop | ours of matmul | loop of matmul |"
    )
    print("|" + "---|" * 13)
    for t in targets(rows, args, gflops):
        print(
            f"| {t['policy']} | {t['core']} | {t['units']} | {t['mode']} "
            f"| {t['ours']:.1f} | {t['ratio']:.2f}x | {t['needed']:.1f} "
            f"| {t['loop']:.1f} | {t['how']} | {t['ours'] / t['loop']:.1%} "
            f"| {t['needed'] / t['loop']:.1%} | {t['of_matmul']:.1%} "
            f"| {t['loop_of_matmul']:.1%} |"
        )
    if not args.no_first_calls:
        first = first_call_rows(1 if args.quick else 5)
        print(
            "\nFirst calls of a small model, fresh process each (s, best of 5): "
            "LSTM 32 units, T=20, D=8, batch 32, 320 examples"
        )
        print("| call | Keras LSTM | Feedback fb=0 | ratio |")
        print("|------|------------|---------------|-------|")
        for i, name in enumerate(("first predict", "first fit epoch", "new length")):
            k, f = first["keras"][i], first["feedback"][i]
            print(f"| {name} | {k:.3f} | {f:.3f} | {f / k:.2f} |")
        varying = varying_length_rows(10 if args.quick else args.varying_batches)
        print(
            "\nOne epoch of batches of distinct lengths (10..209), fresh process "
            "(wall s, XLA executables compiled)"
        )
        print("| model | wall s | lengths | XLA executables |")
        print("|-------|--------|---------|-----------------|")
        for kind, (seconds, lengths, compiled) in varying.items():
            print(f"| {kind} | {seconds:.1f} | {lengths} | {compiled} |")
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
