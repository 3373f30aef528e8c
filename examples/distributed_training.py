"""Multi-worker training of a feedback model with tf.distribute, fault tolerant.

Starts ``--workers`` processes on 127.0.0.1, each with its own ``TF_CONFIG``,
that train one model together with ``MultiWorkerMirroredStrategy`` (picked by
``keras_feedback.training.distribute.strategy_from_environment``) and the
fused XLA engine. ``BackupAndRestore`` saves every epoch; with
``--simulate-failure STEP`` the last worker is killed with SIGKILL at that
step, all workers are stopped and started again, and training resumes from
the last completed epoch. On a real cluster run the same script on every host
with ``--worker`` and that host's ``TF_CONFIG`` (docs/distributed.md).

    python examples/distributed_training.py --workers 2
    python examples/distributed_training.py --workers 2 --simulate-failure 6
    python examples/distributed_training.py --single-device   # the reference

The task: the sum of the two marked values of a sequence (the adding
problem), generated deterministically, so every run sees the same batches.
The trained model is scored on held-out sequences beside the trivial
baseline (always predicting the training targets' mean).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _example_utils as utils  # noqa: E402  (before TensorFlow: quiet start)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_feedback  # noqa: E402
from keras_feedback.training import distribute  # noqa: E402

EPILOG = """\
data: adding-problem sequences generated in numpy (one epoch of
  --steps-per-epoch x --global-batch for training, 1,024 held out; no
  download).
runtime at defaults: about 1 min on a 2-core CPU (2 worker processes;
  --single-device: about 20 s).
trivial baseline: always predicting the training targets' mean, scored on the
  held-out sequences (MSE about 0.167).
writes: the model, the backups, each worker's log and loss.png into --out."""

PAUSED = "paused"  # marker file of the worker that waits to be killed


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="worker processes to start on 127.0.0.1"
    )
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument(
        "--steps-per-epoch",
        type=int,
        default=16,
        help="batches per epoch (the dataset's length)",
    )
    parser.add_argument(
        "--global-batch",
        type=int,
        default=32,
        help="examples per step over all workers",
    )
    parser.add_argument(
        "--learning-rate", type=float, default=0.1, help="SGD learning rate"
    )
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    parser.add_argument("--time-steps", type=int, default=12)
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--feedback-units", type=int, default=4)
    parser.add_argument(
        "--engine",
        default="auto",
        help="recurrence engine: auto (= xla), xla, reference",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        default=os.path.join("keras_feedback_out", "distributed"),
        help="output folder",
    )
    parser.add_argument(
        "--timeout", type=float, default=300, help="seconds to wait for the workers"
    )
    parser.add_argument(
        "--simulate-failure",
        type=int,
        default=None,
        metavar="STEP",
        help="kill a worker at this step, then restart all workers",
    )
    parser.add_argument(
        "--single-device",
        action="store_true",
        help="train in this process on one device instead",
    )
    parser.add_argument(
        "--worker",
        action="store_true",
        help="run as one worker (TF_CONFIG from the environment)",
    )
    parser.add_argument(
        "--pause-at-step", type=int, default=None, help=argparse.SUPPRESS
    )
    parser.add_argument("--pause-task", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-plot", action="store_true", help="do not write loss.png into --out"
    )
    parser.add_argument("--verbose", action="store_true", help=utils.VERBOSE_HELP)
    args = parser.parse_args(argv)
    last = args.epochs * args.steps_per_epoch
    if args.simulate_failure is not None and not 0 < args.simulate_failure < last:
        parser.error(
            f"--simulate-failure must be a step in 1..{last - 1}, "
            f"got {args.simulate_failure}"
        )
    return args


def make_data(args):
    """Inputs ``(N, T, 2)`` (value, marker) and targets ``(N, 1)``, N = one epoch."""
    rng = np.random.default_rng(args.seed)
    n, t = args.steps_per_epoch * args.global_batch, args.time_steps
    values = rng.uniform(size=(n, t)).astype("float32")
    markers = np.zeros((n, t), "float32")
    first = rng.integers(0, t // 2, size=n)
    second = rng.integers(t // 2, t, size=n)
    markers[np.arange(n), first] = 1.0
    markers[np.arange(n), second] = 1.0
    x = np.stack([values, markers], axis=-1)
    y = (values * markers).sum(axis=1, keepdims=True).astype("float32")
    return x, y


class PauseAt(keras.callbacks.Callback):
    """Writes ``marker`` when training reaches ``step``, then waits to be killed."""

    def __init__(self, step, marker):
        super().__init__()
        self.step = step
        self.marker = marker

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            with open(self.marker, "w") as f:
                f.write(str(self.step))
            time.sleep(3600)


def build_model(args):
    """The compiled model: a feedback GRU layer and a linear read-out.

    The output keeps its last axis (no ``Reshape(())``): on ``(batch,)``
    outputs Keras's mean squared error is a scalar before Keras divides it
    by the number of replicas, and skips that division, which would multiply
    the gradients by the number of replicas (docs/distributed.md).
    """
    model = keras.Sequential(
        [
            keras.Input((args.time_steps, 2)),
            keras_feedback.layers.Feedback(
                args.units,
                feedback_units=args.feedback_units,
                core="gru",
                engine=args.engine,
            ),
            keras.layers.Dense(1),
        ]
    )
    model.compile(
        keras.optimizers.SGD(args.learning_rate, momentum=args.momentum), "mse"
    )
    return model


def train(args, strategy):
    """Builds, trains and saves the model under ``strategy``; returns a summary."""
    per_replica = distribute.per_replica_batch_size(args.global_batch, strategy)
    task_type, task_id = "local", 0
    if strategy.cluster_resolver is not None:
        task_type = strategy.cluster_resolver.task_type
        task_id = strategy.cluster_resolver.task_id
    task = f"{task_type}-{task_id}"
    keras.utils.set_random_seed(args.seed)
    dataset = tf_dataset(*make_data(args), args.global_batch)
    with strategy.scope():
        model = build_model(args)
    callbacks = [
        distribute.backup_and_restore(os.path.join(args.out, "backup"), strategy)
    ]
    if args.pause_at_step is not None and args.pause_task == task_id:
        marker = os.path.join(args.out, PAUSED)
        callbacks.append(PauseAt(args.pause_at_step, marker))
    history = model.fit(
        dataset, epochs=args.epochs, shuffle=False, callbacks=callbacks, verbose=2
    )
    folder = os.path.join(args.out, task)
    os.makedirs(folder, exist_ok=True)
    np.savez(os.path.join(folder, "weights.npz"), *model.get_weights())
    summary = dict(
        task=task,
        chief=distribute.is_chief(strategy),
        strategy=type(strategy).__name__,
        replicas=strategy.num_replicas_in_sync,
        per_replica_batch=per_replica,
        engine=args.engine,
        iterations=int(model.optimizer.iterations.numpy()),
        epochs_run=len(history.history["loss"]),
        loss=[float(v) for v in history.history["loss"]],
    )
    with open(os.path.join(folder, "result.json"), "w") as f:
        json.dump(summary, f, indent=1)
    distribute.save_model(model, os.path.join(args.out, "model.keras"), strategy)
    return summary


def tf_dataset(x, y, global_batch):
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    return distribute.shard_by_data(dataset.batch(global_batch, drop_remainder=True))


# --- the launcher: one process per worker, TF_CONFIG each ---------------------


def start_workers(argv, configs, out, extra=()):
    """Starts one ``--worker`` process per ``TF_CONFIG`` in ``configs``."""
    logs = os.path.join(out, "logs")
    os.makedirs(logs, exist_ok=True)
    processes = []
    for config in configs:
        task = config["task"]
        log = open(os.path.join(logs, f"{task['type']}-{task['index']}.log"), "a")
        env = dict(os.environ, TF_CONFIG=json.dumps(config), TF_CPP_MIN_LOG_LEVEL="2")
        processes.append(
            subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), *argv, "--worker", *extra],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        log.close()
    return processes


def kill_all(processes):
    """SIGKILL every worker still running and reap it."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
    for process in processes:
        process.wait()


def _log_tail(out, index, lines=15):
    path = os.path.join(out, "logs", f"worker-{index}.log")
    try:
        with open(path) as f:
            text = [line for line in f if line.strip()]
    except OSError as error:
        return f"(no log: {error})"
    return "".join(text[-lines:])


class _Echo:
    """Prints the epoch lines a worker's log gains (the launcher's progress)."""

    def __init__(self, path):
        self.path = path
        self.offset = os.path.getsize(path) if os.path.exists(path) else 0

    def __call__(self):
        try:
            with open(self.path) as f:
                f.seek(self.offset)
                text = f.read()
        except OSError:
            return
        complete = text[: text.rfind("\n") + 1]
        self.offset += len(complete.encode())
        for line in complete.splitlines():
            if "loss:" in line and "\x1b" not in line:
                print(f"  worker 0: {line.strip()}", flush=True)


def wait_workers(processes, out, timeout, until=None, echo=False):
    """Waits for every worker to exit 0 (or for the file ``until`` to appear).

    A worker that fails or a timeout stops all of them: a worker whose peer
    is gone would otherwise wait on its collectives for ever. ``echo``
    prints worker 0's epoch lines as they come.
    """
    deadline = time.monotonic() + timeout
    progress = _Echo(os.path.join(out, "logs", "worker-0.log")) if echo else None
    try:
        while True:
            if progress is not None:
                progress()
            codes = [p.poll() for p in processes]
            failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                i = failed[0]
                raise RuntimeError(
                    f"worker {i} exited with status {codes[i]}; its log ends "
                    f"with:\n{_log_tail(out, i)}"
                )
            if until is not None and os.path.exists(until):
                return
            if all(c == 0 for c in codes):
                if progress is not None:
                    progress()
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the workers did not finish within {timeout:.0f} s")
            time.sleep(0.1)
    except BaseException:
        kill_all(processes)
        raise


def run_cluster(argv, args):
    """Starts the workers, waits (killing one first if asked) and returns the
    chief's summary."""
    configs = distribute.local_cluster(args.workers)
    os.makedirs(args.out, exist_ok=True)
    marker = os.path.join(args.out, PAUSED)
    if os.path.exists(marker):
        os.remove(marker)
    extra = ()
    if args.simulate_failure is not None:
        extra = (
            "--pause-at-step",
            str(args.simulate_failure),
            "--pause-task",
            str(args.workers - 1),
        )
    processes = start_workers(argv, configs, args.out, extra)
    try:
        if args.simulate_failure is not None:
            wait_workers(processes, args.out, args.timeout, until=marker, echo=True)
            os.kill(processes[-1].pid, signal.SIGKILL)
            print(
                f"worker {args.workers - 1} killed at step "
                f"{args.simulate_failure}; restarting all workers"
            )
            kill_all(processes)
            processes = start_workers(argv, configs, args.out)
        wait_workers(processes, args.out, args.timeout, echo=True)
    finally:
        kill_all(processes)
    with open(os.path.join(args.out, "worker-0", "result.json")) as f:
        return json.load(f)


def held_out(args, examples=1024):
    """Held-out sequences: the training data's generator, another seed."""
    batches = -(-examples // args.global_batch)
    other = argparse.Namespace(
        **{**vars(args), "seed": args.seed + 1000, "steps_per_epoch": batches}
    )
    return make_data(other)


def score(args, summary):
    """The saved model's held-out MSE beside the training mean's."""
    model = keras.saving.load_model(os.path.join(args.out, "model.keras"))
    _, y_train = make_data(args)
    x_test, y_test = held_out(args)
    mse = float(np.mean((model.predict(x_test, verbose=0) - y_test) ** 2))
    baseline = utils.mse_of_mean(y_train, y_test)
    result = utils.report(
        f"MSE ({len(y_test)} sequences)",
        mse,
        baseline,
        "always predicting the training mean",
    )
    if not args.no_plot:
        utils.plot_curves(
            os.path.join(args.out, "loss.png"),
            {"training loss (the last run)": summary["loss"]},
            "MSE",
            baseline,
            "always predicting the training mean (held out)",
        )
    return {**summary, **result}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.worker:
        summary = train(args, distribute.strategy_from_environment())
        print(json.dumps(summary))
        return summary
    if args.single_device:
        os.environ.pop("TF_CONFIG", None)
        summary = train(args, distribute.strategy_from_environment())
        print(
            f"one device, {summary['iterations']} steps; loss per epoch: "
            + ", ".join(f"{v:.4f}" for v in summary["loss"])
        )
        return score(args, summary)
    print(
        f"starting {args.workers} workers on 127.0.0.1 (logs in "
        f"{os.path.join(args.out, 'logs')}); worker 0's epochs:",
        flush=True,
    )
    summary = run_cluster(argv, args)
    print(
        f"{args.workers} workers, {summary['replicas']} replicas, "
        f"{summary['iterations']} steps; loss per epoch of the last run: "
        + ", ".join(f"{v:.4f}" for v in summary["loss"])
    )
    return score(args, summary)


if __name__ == "__main__":
    main()
