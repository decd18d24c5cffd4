"""On every desktop and drive: only calls that Linux, macOS and Windows all have, ordinary permissions."""

import ast
import io
import os
import signal
import stat
import sys

import pytest
from PIL import Image

import ClassImageAugmentationSample
import photos
import runs
from helpers import REPO, make_images, run_in_process, stderr_lines

POSIX_ONLY = pytest.mark.skipif(os.name == "nt", reason="file modes are a POSIX matter")

# The names of os and signal the project may use as they are: Python has them on Linux, macOS and
# Windows alike. One a system lacks (SIGHUP, os.process_cpu_count before Python 3.13) is used
# through getattr or hasattr, with what to do without it; os.path is everywhere. Not os.link:
# FAT and exFAT drives (USB sticks) have no hard links.
EVERYWHERE = {
    "os": {"O_WRONLY", "W_OK", "_exit", "access", "close", "cpu_count", "devnull", "dup", "dup2", "environ", "fsync",
           "fsdecode", "fsencode", "getcwd", "getpid", "isatty", "listdir", "makedirs", "mkdir", "name", "open",
           "path", "read", "remove", "rename", "replace", "rmdir", "scandir", "sep", "stat", "strerror",
           "unlink", "walk", "write"},
    "signal": {"SIGINT", "SIGTERM", "SIG_DFL", "SIG_IGN", "Signals", "default_int_handler", "getsignal",
               "raise_signal", "signal"},
}
# Modules that exist on POSIX systems only.
POSIX_MODULES = {"fcntl", "grp", "posix", "pty", "pwd", "resource", "termios", "tty"}
# What Windows lacks of the names Linux has, taken away while the scripts run below.
NOT_ON_WINDOWS = {"os": ["fork", "getuid", "geteuid", "getgid", "killpg", "setsid", "sched_getaffinity",
                         "sched_setaffinity", "getloadavg", "statvfs", "chown", "sync"],
                  "signal": ["SIGHUP", "SIGKILL", "SIGALRM", "SIGUSR1", "alarm", "setitimer", "pthread_kill",
                             "pthread_sigmask", "siginterrupt"]}


@pytest.fixture
def umask_022():
    """The usual umask, whatever the one of the machine running the tests."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def project_modules():
    return sorted(REPO.glob("*.py"))


def test_the_code_calls_only_what_every_system_has():
    for path in project_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in EVERYWHERE:
                assert node.attr in EVERYWHERE[node.value.id], \
                    f"{path.name}:{node.lineno}: {node.value.id}.{node.attr} is not on every system"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module]
                assert not {module.split(".")[0] for module in modules} & POSIX_MODULES, \
                    f"{path.name}:{node.lineno}: imports a module Windows does not have"


@POSIX_ONLY
def test_new_images_never_overwrite_and_are_readable_by_all(tmp_path, umask_022):
    (tmp_path / "star_0002.jpg").write_bytes(b"a user's file")
    picture = Image.new("RGB", (8, 8), "red")
    written = [photos.save_new_jpeg(picture, str(tmp_path), "star") for _ in range(3)]
    assert [os.path.basename(path) for path in written] == ["star_0001.jpg", "star_0003.jpg",
                                                            "star_0004.jpg"]
    assert (tmp_path / "star_0002.jpg").read_bytes() == b"a user's file"
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "star_0001.jpg", "star_0002.jpg", "star_0003.jpg", "star_0004.jpg"]  # no temporary file left
    assert all(stat.S_IMODE(os.stat(path).st_mode) == 0o644 for path in written)

    copied = ClassImageAugmentationSample.copy_once(written[0], str(tmp_path), "star_0002.jpg")
    assert os.path.basename(copied) == "star_0002_2.jpg"
    assert (tmp_path / "star_0002.jpg").read_bytes() == b"a user's file"
    assert ClassImageAugmentationSample.copy_once(written[0], str(tmp_path), "star_0002.jpg") is None


@POSIX_ONLY
def test_saved_files_follow_the_umask(tmp_path, umask_022):
    def save(path):
        with open(path, "wb") as file:
            file.write(b"model")
    runs.write_whole({str(tmp_path / "model.h5"): save, str(tmp_path / "model.weights.h5"): save})
    assert {path.name: stat.S_IMODE(path.stat().st_mode) for path in tmp_path.iterdir()} == {
        "model.h5": 0o644, "model.weights.h5": 0o644}


@pytest.fixture(scope="module")
def scripts_run(tmp_path_factory):
    """Every script run without what Windows lacks, as on a FAT drive, under umask 022: {name: result}."""
    work = tmp_path_factory.mktemp("portability")
    train_dir = make_images(work / "data" / "train", {"apple": 8, "berry": 4}, seed=1)
    validation_dir = make_images(work / "data" / "validation", {"apple": 4, "berry": 4}, seed=2)
    (work / "data" / "train" / "refImage.png").write_bytes(
        (train_dir / "apple" / "apple_000.png").read_bytes())
    # Files already where the scripts write, which they must leave as they are.
    (work / "data" / "generated" / "train" / "apple").mkdir(parents=True)
    (work / "data" / "generated" / "train" / "apple" / "Random_0001.jpg").write_bytes(b"mine")
    (work / "data" / "generated" / "MY_CLASS_0002.jpg").write_bytes(b"mine too")
    common = ["--train-dir", train_dir, "--validation-dir", validation_dir]
    results = {}
    previous_umask = os.umask(0o022)
    try:
        with pytest.MonkeyPatch.context() as patch:
            for module, names in ((os, NOT_ON_WINDOWS["os"]), (signal, NOT_ON_WINDOWS["signal"])):
                for name in names:
                    patch.delattr(module, name, raising=False)
            patch.setattr(runs, "STOP_SIGNALS", (signal.SIGINT, signal.SIGTERM))
            for name, script, arguments in [
                ("unitary", "UnitaryImageAugmentationSample.py", ["--count", 3]),
                ("unitary again", "UnitaryImageAugmentationSample.py", ["--count", 3]),
                ("balance", "ClassImageAugmentationSample.py", [*common, "--train-target", 10,
                                                                "--validation-target", 5]),
                ("first", "FirstModel.py", [*common, "--epochs", 2, "--batch-size", 2, "--image-size", 32]),
                ("first predict", "FirstModel.py", ["--predict", validation_dir]),
                ("svm", "SVMModel.py", common),
                ("svm predict", "SVMModel.py", ["--predict", validation_dir]),
            ]:
                results[name] = run_in_process(script, *arguments, cwd=work)
    finally:
        os.umask(previous_umask)
    return work, results


def test_every_script_runs_without_what_windows_lacks(scripts_run):
    work, results = scripts_run
    for name, result in results.items():
        assert result.returncode == 0, (name, result.stderr)
        assert stderr_lines(result) == [], name
    assert len(results["first predict"].stdout.splitlines()) == 8
    assert len(results["svm predict"].stdout.splitlines()) == 8
    for model_file in ("FirstModel.h5", "FirstModel.weights.h5", "FirstModel.last.h5", "SVMModel.joblib"):
        assert (work / model_file).is_file()


def test_files_already_there_are_never_overwritten(scripts_run):
    work, _ = scripts_run
    generated = work / "data" / "generated"
    assert (generated / "MY_CLASS_0002.jpg").read_bytes() == b"mine too"
    assert sorted(path.name for path in generated.glob("MY_CLASS_*")) == [
        f"MY_CLASS_{number:04d}.jpg" for number in range(1, 8)]
    assert (generated / "train" / "apple" / "Random_0001.jpg").read_bytes() == b"mine"
    for split, target in (("train", 10), ("validation", 5)):
        for class_name in ("apple", "berry"):
            assert len(photos.list_images(generated / split / class_name)) == target


@POSIX_ONLY
def test_every_file_written_is_readable_by_all(scripts_run):
    work, _ = scripts_run
    written = [path for path in work.rglob("*") if path.is_file() and path.read_bytes()[:4] != b"mine"]
    assert len(written) > 50
    modes = {str(path.relative_to(work)): oct(stat.S_IMODE(path.stat().st_mode)) for path in written}
    assert set(modes.values()) == {"0o644"}, modes
    folders = {oct(stat.S_IMODE(path.stat().st_mode)) for path in work.rglob("*") if path.is_dir()}
    assert folders == {"0o755"}


def test_tensorflow_start_up_lines_are_hidden_and_real_errors_kept(monkeypatch):
    start_up = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1795732351.602074    2205 cudart_stub.cc:31] Could not find cuda drivers on "
        "your machine, GPU will not be used.\n"
        "I0000 00:00:1795732352.004730    2205 cpu_feature_guard.cc:227] This TensorFlow binary is "
        "optimized to use available CPU instructions in performance-critical operations.\n"
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
        "with the appropriate compiler flags.\n"
        "E0000 00:00:1795732359.610859    2205 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
        "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n")
    real_error = "E0000 00:00:1795732360.1    2205 some_op.cc:1] Out of memory while allocating\n"
    assert runs.without_start_up_lines(start_up) == ""
    assert runs.without_start_up_lines(start_up + real_error) == real_error
    assert runs.without_start_up_lines("Traceback (most recent call last):\n") == \
        "Traceback (most recent call last):\n"
    # Said later, as when TensorFlow is first asked for a GPU, it is the same start-up line.
    cu_init_failed = start_up.splitlines(keepends=True)[-1]
    assert runs.without_start_up_lines(cu_init_failed) == ""
    # With a CUDA driver, a failed cuInit is a real error: the GPU that is there cannot be used.
    monkeypatch.setattr(runs, "_no_gpu_driver", False)
    assert runs.without_start_up_lines(cu_init_failed) == cu_init_failed


def test_start_up_lines_are_caught_on_descriptor_2_whatever_sys_stderr_is(capfd, monkeypatch):
    """TensorFlow's C++ writes on descriptor 2 also where sys.stderr is another stream (IDLE, Jupyter, pytest)."""
    shown = io.StringIO()
    monkeypatch.setattr(sys, "stderr", shown)
    with runs.start_up_lines_hidden():
        os.write(2, b"I0000 00:00:1795732351.602074    2205 cudart_stub.cc:31] Could not find cuda drivers\n"
                    b"E0000 00:00:1795732360.1    2205 some_op.cc:1] Out of memory while allocating\n")
    assert shown.getvalue() == "E0000 00:00:1795732360.1    2205 some_op.cc:1] Out of memory while allocating\n"
    assert capfd.readouterr().err == ""
