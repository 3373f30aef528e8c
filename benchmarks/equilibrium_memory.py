"""Peak memory of an ``Equilibrium`` training step against its iterations.

For each gradient mode (``implicit``, ``phantom``, ``unrolled``) and each
number of forced iterations, a fresh process builds ``Input -> Equilibrium
-> Dense`` (a Dense tanh block fed back by concatenation, its fed-back part
of spectral norm 0.95, so that the residual stays far above the tolerance
and every solve runs ``max_iterations`` evaluations; Picard, the adjoint
solve of ``implicit`` forced alike) and runs ``--steps`` training steps
(``train_on_batch``, Adam, MSE). A step's peak memory is the peak resident
size during it minus the resident size just before it (Linux ``VmHWM``
reset by ``/proc/self/clear_refs``; glibc made to return freed blocks of 64
KiB or more at once, as in ``rnn_throughput.py``, and oneDNN's memory pool
off, which would otherwise keep what the first step allocated); the table
gives the last step's, with the iterations the layer reported.

    python benchmarks/equilibrium_memory.py
    python benchmarks/equilibrium_memory.py --iterations 10 100 300 --units 256
"""

import argparse
import json
import os
import subprocess
import sys

GRADIENTS = ("implicit", "phantom", "unrolled")

_PROBE = """
import ctypes, json, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import keras, numpy as np
import keras_feedback

def status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key))

rng = np.random.default_rng(0)
features, units, batch = {features}, {units}, {batch}
block = keras.layers.Dense(units, activation="tanh")
block.build((None, features + units))
kernel = rng.standard_normal((features + units, units)).astype("float32")
fed = kernel[features:]
kernel[features:] = 0.95 * fed / np.linalg.norm(fed, 2)
block.kernel.assign(kernel)
layer = keras_feedback.layers.Equilibrium(
    block, solver="picard", max_iterations={iterations}, tolerance=1e-9,
    gradient={gradient!r}, name="deq")
inputs = keras.Input((features,))
model = keras.Model(inputs, keras.layers.Dense(1)(layer(inputs)))
model.compile("adam", "mse")
x = rng.standard_normal((batch, features)).astype("float32")
y = rng.standard_normal((batch, 1)).astype("float32")
peaks = []
for _ in range({steps}):
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status("VmRSS:")
    logs = model.train_on_batch(x, y, return_dict=True)
    peaks.append(status("VmHWM:") - before)
print(json.dumps({{"peaks": peaks, "iterations": float(logs["deq_iterations"])}}))
"""


def measure(gradient, iterations, args):
    """``(peak bytes of the last step, iterations reported)`` in a fresh process."""
    code = _PROBE.format(
        features=args.features,
        units=args.units,
        batch=args.batch,
        iterations=iterations,
        gradient=gradient,
        steps=args.steps,
    )
    # oneDNN keeps a pool of the memory it frees (a step would then add
    # nothing after the first); without it TensorFlow's CPU allocator
    # allocates and frees each step's tensors.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", TF_ENABLE_ONEDNN_OPTS="0")
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["peaks"][-1], result["iterations"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--gradients", nargs="+", choices=GRADIENTS, default=GRADIENTS)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--units", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args(argv)
    rows = []
    for gradient in args.gradients:
        for iterations in args.iterations:
            peak, used = measure(gradient, iterations, args)
            rows.append(
                dict(gradient=gradient, iterations=iterations, used=used, peak=peak)
            )
    print(
        f"B={args.batch} features={args.features} units={args.units}; peak "
        "resident memory of a training step (the last of "
        f"{args.steps}), MiB"
    )
    print("| gradient | max_iterations | iterations run | peak MiB | vs fewest |")
    print("|----------|---------------:|---------------:|---------:|----------:|")
    for row in rows:
        base = next(
            r["peak"]
            for r in rows
            if r["gradient"] == row["gradient"]
            and r["iterations"] == min(args.iterations)
        )
        ratio = row["peak"] / base if base else float("nan")
        print(
            f"| {row['gradient']} | {row['iterations']} | {row['used']:.0f} | "
            f"{row['peak'] / 2**20:.1f} | {ratio:.2f}x |"
        )
    return rows


if __name__ == "__main__":
    main()
