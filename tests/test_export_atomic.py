"""Exports replace what they overwrite atomically, and clean up after kills.

The kill test runs one child process that builds a tiny model and, for each
round, forks an exporter that the test kills (SIGKILL) at a random time: a
fork starts in milliseconds, so 20 kills cost 20 exports, not 20 imports of
TensorFlow.
"""

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_feedback import export
from keras_feedback.export import _atomic
from keras_feedback.layers import Feedback

KILLS = 20

CHILD = textwrap.dedent(
    """
    import os, sys, time
    import keras, numpy as np
    from keras_feedback import export
    from keras_feedback.export import _atomic
    from keras_feedback.layers import Feedback

    base, expected_path, kills = sys.argv[1], sys.argv[2], int(sys.argv[3])
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, 3))
    model = keras.Model(inputs, Feedback(4, return_sequences=True)(inputs))
    weights = model.get_weights()
    # Weights of each export: variant 0 first, round i writes variant i + 1.
    variants = [[w + 0.1 * k for w in weights] for k in range(kills + 2)]
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
    outputs = []
    for variant in variants:
        model.set_weights(variant)
        outputs.append(np.asarray(model(x)))
    np.savez(expected_path, x=x, outputs=np.stack(outputs))

    # Widen the gaps between the file-system steps of the swap, so that
    # random kills land in each of them.
    def slowed(function):
        def run(*args):
            time.sleep(0.03)
            result = function(*args)
            time.sleep(0.03)
            return result
        return run
    _atomic._exchange = slowed(_atomic._exchange)
    _atomic._remove = slowed(_atomic._remove)
    swap = _atomic.swap_folder
    def announced_swap(*args):
        print("swapping", flush=True)
        return swap(*args)

    model.set_weights(variants[0])
    start = time.perf_counter()
    export.export_saved_model(model, base)
    print("ready", time.perf_counter() - start, flush=True)
    _atomic.swap_folder = announced_swap
    for line in sys.stdin:
        command, index = line.split()
        model.set_weights(variants[int(index) + 1])
        if command == "final":
            export.export_saved_model(model, base, overwrite=True)
            print("done", flush=True)
            break
        pid = os.fork()
        if pid == 0:
            export.export_saved_model(model, base, overwrite=True)
            os._exit(0)
        print("pid", pid, flush=True)
        sys.stdin.readline()  # reaped only once the test has killed it
        _, status = os.waitpid(pid, 0)
        print("status", status, flush=True)
    """
)


def _entries(base):
    return sorted(os.listdir(base))


def _digest(folder):
    """A digest of every file under ``folder`` (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _read(child, *expected):
    """The next line of the child whose first word is one of ``expected``."""
    while True:
        words = child.stdout.readline().split()
        assert words, f"the child ended; expected {expected}"
        if words[0] in expected:
            return words


def test_killed_exports_leave_a_complete_version_and_no_staging(tmp_path):
    base = tmp_path / "serving"
    expected_path = tmp_path / "expected.npz"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(base), str(expected_path), str(KILLS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    rng = np.random.default_rng(7)
    killed = kept = replaced = 0
    current = 0
    verified = None
    try:
        duration = float(_read(child, "ready")[1])
        expected = np.load(expected_path)
        outputs = expected["outputs"]
        for index in range(KILLS):
            child.stdin.write(f"export {index}\n")
            child.stdin.flush()
            pid = int(_read(child, "pid")[1])
            if index % 2:
                # In the swap: from its start to about its end.
                _read(child, "swapping")
                time.sleep(rng.uniform(0.0, 0.13))
            else:
                # Anywhere in the export.
                time.sleep(rng.uniform(0.0, duration))
            os.kill(pid, signal.SIGKILL)  # a zombie if it had finished
            child.stdin.write("reap\n")
            child.stdin.flush()
            status = int(_read(child, "status")[1])
            killed += os.WIFSIGNALED(status)
            version = base / "1"
            assert version.is_dir(), (index, _entries(base))
            digest = _digest(version)
            if digest == verified:
                kept += 1  # byte for byte the version that loaded last time
            else:
                y = _serve(version, expected["x"])
                if np.allclose(y, outputs[index + 1], atol=1e-5):
                    replaced += 1
                    current = index + 1
                else:
                    np.testing.assert_allclose(y, outputs[current], atol=1e-5)
                    kept += 1
                verified = digest
            # What TF Serving lists: only the numeric folder.
            assert [e for e in _entries(base) if not e.startswith(".")] == ["1"]
        child.stdin.write(f"final {KILLS}\n")
        child.stdin.flush()
        _read(child, "done")
        assert child.wait(timeout=120) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert _entries(base) == ["1"]
    np.testing.assert_allclose(
        _serve(base / "1", expected["x"]), outputs[KILLS + 1], atol=1e-5
    )
    # The kills interrupted exports before their swap and after its rename.
    assert killed >= KILLS // 2, killed
    assert kept >= 1 and replaced >= 1, (kept, replaced)


def _tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, 3))
    return keras.Model(inputs, Feedback(4, return_sequences=True)(inputs))


def _serve(path, x):
    loaded = tf.saved_model.load(str(path))
    return loaded.signatures["serving_default"](x=tf.constant(x))["y"].numpy()


def test_fallback_swap_killed_between_renames_is_recovered(tmp_path, monkeypatch):
    """Without the exchange (other systems), a kill between renaming the old
    version aside and the new one in is undone by the next export."""
    x = np.random.default_rng(0).normal(size=(2, 4, 3)).astype("float32")
    old_model, new_model = _tiny_model(0), _tiny_model(1)
    base = tmp_path / "serving"
    export.export_saved_model(old_model, base)
    old = _serve(base / "1", x)
    monkeypatch.setattr(_atomic, "_exchange", lambda first, second: False)
    real_rename = os.rename
    calls = []

    def rename_then_die(source, target):
        calls.append(os.path.basename(target))
        real_rename(source, target)
        if ".old-" in os.path.basename(target):
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(_atomic.os, "rename", rename_then_die)
    with pytest.raises(KeyboardInterrupt):
        export.export_saved_model(new_model, base, overwrite=True)
    monkeypatch.setattr(_atomic.os, "rename", real_rename)
    # The process died between the renames: no version folder, the old one
    # under its trash name. A pid that no longer runs stands for the dead
    # process.
    assert not (base / "1").exists()
    (trash,) = [e for e in _entries(base) if ".old-" in e]
    dead = str(2**22 + 12345)
    os.rename(base / trash, base / trash.replace(f"-{os.getpid()}-", f"-{dead}-"))
    # The next export (even one that does not overwrite) first puts it back.
    with pytest.raises(ValueError, match="already exists"):
        export.export_saved_model(new_model, base)
    np.testing.assert_allclose(_serve(base / "1", x), old, atol=1e-6)
    assert _entries(base) == ["1"]


def test_leftovers_of_dead_exports_are_removed_and_live_ones_kept(tmp_path):
    base = tmp_path / "serving"
    dead = 2**22 + 12345
    (base / f".1.partial-{dead}-abc").mkdir(parents=True)
    (base / f".1.partial-{dead}-abc" / "saved_model.pb").write_bytes(b"half")
    (base / f".2.old-{dead}-xyz").mkdir()
    live = base / f".3.partial-{os.getppid()}-abc"
    live.mkdir()
    export.export_saved_model(_tiny_model(), base)
    # The dead export's trash of version 2 was a complete version 2.
    assert _entries(base) == [live.name, "1", "2"]
    lite_dir = tmp_path / "lite"
    lite_dir.mkdir()
    (lite_dir / f".model.partial-{dead}-q1.tflite").write_bytes(b"half")
    (lite_dir / "model.tflite").write_bytes(b"old")
    with pytest.raises(ValueError, match="already exists"):
        export.export_litert(_tiny_model(), lite_dir / "model.tflite")
    assert (lite_dir / "model.tflite").read_bytes() == b"old"
    export.export_litert(_tiny_model(), lite_dir / "model.tflite", overwrite=True)
    assert _entries(lite_dir) == ["model.tflite"]
    assert "WHILE" in export.litert_ops(lite_dir / "model.tflite")


def test_failed_litert_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"old")

    def fail(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(_atomic.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        export.export_litert(_tiny_model(), path, overwrite=True)
    assert path.read_bytes() == b"old"
    assert _entries(tmp_path) == ["model.tflite"]


@pytest.mark.parametrize("exporter", ["saved_model", "litert"])
def test_path_under_a_regular_file(tmp_path, exporter):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    model = _tiny_model()
    with pytest.raises(ValueError, match=r"is a file, not a folder") as error:
        if exporter == "saved_model":
            export.export_saved_model(model, blocker / "serving")
        else:
            export.export_litert(model, blocker / "sub" / "model.tflite")
    assert str(blocker) in str(error.value)
