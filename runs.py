"""A script's process: its start, its stops (one line saying what is saved, then the end by the signal), its errors in
one line, the lock that keeps two trainings off one model file, and files written whole."""

import contextlib
import logging
import os
import re
import signal
import sys
import tempfile

import filelock

# Ctrl-C; `kill`, `docker stop` and job schedulers (SIGTERM); a closed terminal (SIGHUP, which Windows lacks).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

_script, _said_on_stop = os.path.basename(sys.argv[0]), "nothing saved"
_held_stops = None  # a list while a file that must be whole is being written
_lock_file = None
_stderr = None  # the real standard error, while TensorFlow's start-up lines are caught
_output_gone = False  # standard output or error can no longer be written: a closed pipe or terminal
_no_gpu_driver = False  # TensorFlow said it found no CUDA driver
_stopping = False  # a stop signal is being acted on


class DataError(Exception):
    """A problem with the user's folders, files or settings, told in one line."""


def start(script):
    """Stops handled, output that can no longer be written dealt with, file names that are not text printable,
    TensorFlow loaded without its start-up lines."""
    global _script, _said_on_stop, _output_gone, _stopping
    _script, _said_on_stop, _output_gone, _stopping = script, "nothing saved", False, False
    sys.stdout, sys.stderr = _Output(sys.stdout), _Output(sys.stderr)
    for number in STOP_SIGNALS:
        if signal.getsignal(number) is not signal.SIG_IGN:  # left ignored where ignored: nohup's SIGHUP
            signal.signal(number, _stop)
    with contextlib.suppress(AttributeError, ValueError):  # names from old archives may hold bytes that are not text
        sys.stdout.reconfigure(errors="replace")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # and no C++ information lines later
    with start_up_lines_hidden():
        import tensorflow as tf
        tf.config.list_physical_devices("GPU")  # where TensorFlow looks for a GPU, and says so
    # Keras calls .h5 files legacy at every save; the scripts save .h5 on purpose, as in 2018.
    logging.getLogger("absl").addFilter(lambda record: "considered legacy" not in record.getMessage())


# Lines TensorFlow prints as it starts, whatever TF_CPP_MIN_LOG_LEVEL says, with nothing to act on (cuInit reads ill).
_START_UP_LINE = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\)|I\d{4} |To enable the following")


def without_start_up_lines(text):
    """text less TensorFlow's start-up lines, and its failed cuInit once it said no CUDA driver was found (then no
    GPU), in this text or earlier: TensorFlow says the one as it loads, the other when first asked for a GPU."""
    global _no_gpu_driver
    _no_gpu_driver = _no_gpu_driver or "Could not find cuda drivers" in text
    return "".join(line for line in text.splitlines(keepends=True) if not _START_UP_LINE.match(line)
                   and not (_no_gpu_driver and "failed call to cuInit" in line))


@contextlib.contextmanager
def start_up_lines_hidden(kept=without_start_up_lines):
    """What is written on file descriptor 2 (TensorFlow's C++ writes there, whatever sys.stderr is) inside
    the block, printed after it through kept: less start-up lines, or (the converter's log) nothing."""
    global _stderr
    try:
        sys.stderr.flush()
        _stderr = os.dup(2)
    except (AttributeError, OSError):  # no console (pythonw on Windows)
        yield
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(_stderr, 2)
            os.close(_stderr)
            _stderr = None
            caught.seek(0)
            sys.stderr.write(kept(caught.read().decode(errors="replace")))
            sys.stderr.flush()


class _Output:
    """sys.stdout or sys.stderr. Once what it writes to is gone (`| tee` or `| head` ended, the terminal closed), a
    training run goes on without its output, saving its epochs; anything else ends quietly, as `| head` expects."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        return self._written(lambda: self._stream.write(text)) or len(text)

    def flush(self):
        self._written(self._stream.flush)

    def _written(self, write):
        global _output_gone
        if not _output_gone:
            try:
                return write()
            except OSError:  # a broken pipe; a closed terminal's input/output error
                _output_gone = True
                if _lock_file is None and not _stopping:  # no training run to save: the end a closed pipe gives
                    if hasattr(signal, "SIGPIPE"):
                        end_by_signal(getattr(signal, "SIGPIPE"))
                    os._exit(1)  # Windows: no SIGPIPE

    def __getattr__(self, name):
        return getattr(self._stream, name)


# Stops. Every complete epoch is on disk and every file is written whole, so a stop need not wait.

def on_stop(message):
    """What a stop says from now on: what is saved, and what the same command will do."""
    global _said_on_stop
    _said_on_stop = message


def _stop(signal_number, frame):
    global _stopping
    if _held_stops is not None:  # acted on once the file being written is whole
        _held_stops.append(signal_number)
        return
    _stopping = True  # where the line below cannot be written (a closed terminal), the end is still the signal's
    name = "Ctrl-C" if signal_number == signal.SIGINT else signal.Signals(signal_number).name
    with contextlib.suppress(OSError, ValueError):  # a closed terminal or pipe: the line goes nowhere
        if _stderr is not None:  # TensorFlow is starting: its lines are caught, not the stop's
            os.dup2(_stderr, 2)
        print(readable_text(f"{_script}: interrupted ({name}); {_said_on_stop}"), file=sys.stderr, flush=True)
    if _lock_file:
        with contextlib.suppress(OSError):
            os.unlink(_lock_file)  # still held: no other run takes a lock on the name as it goes
    end_by_signal(signal_number)


def end_by_signal(signal_number):
    """End the process by the signal, as shells expect: they show 128 + its number, and a loop of runs stops."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    if os.name != "nt":  # Windows ends a process by a signal with its own status
        signal.signal(signal_number, signal.SIG_DFL)
        signal.raise_signal(signal_number)
    os._exit(128 + signal_number)


@contextlib.contextmanager
def stops_held():
    """A stop during the block is acted on after it: for a new image, written under its own name, never another's."""
    global _held_stops
    _held_stops = []
    try:
        yield
    finally:
        held, _held_stops = _held_stops, None
        if held:
            _stop(held[0], None)


def readable_text(text):
    """text as valid Unicode: the bytes of a file name that are not UTF-8 become \ufffd."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def warn(message):
    print(f"warning: {readable_text(message)}", file=sys.stderr, flush=True)


def cores():
    """The cores this process may use (process_cpu_count: Python 3.13)."""
    return (getattr(os, "process_cpu_count", None) or os.cpu_count)() or 1


def first_line(error):
    """The first line of an exception's message, or its kind where it has none."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def why_not_written(error):
    """The reason an OSError gives for a file not written; h5py's RuntimeError has no number, only text."""
    return os.strerror(error.errno) if getattr(error, "errno", None) else first_line(error)


# Files are written under a fixed hidden name, then renamed into place: a killed run leaves what the next write takes.

@contextlib.contextmanager
def lock(model_file):
    """Hold model_file for this run, a second run on it refused in one line; the system lets go if the process dies."""
    global _lock_file
    held = filelock.FileLock(f"{model_file}.lock", blocking=False)
    try:
        held.acquire()
    except filelock.Timeout:
        raise DataError(f"another run is training '{model_file}' (it holds '{held.lock_file}'): wait for it to end, "
                        "or choose another --model-file") from None
    _lock_file = held.lock_file
    try:
        yield
    finally:
        _lock_file = None
        with contextlib.suppress(OSError):  # Windows: the release removes it
            os.unlink(held.lock_file)  # still held: no other run takes a lock on the name as it goes
        held.release()


def hidden_name(path):
    """.partial.<name> beside path: hidden, and ending as Keras requires (.h5, .weights.h5)."""
    return os.path.join(os.path.dirname(path), f".partial.{os.path.basename(path)}")


def write_whole(saves):
    """Write each of saves, {path: save(path)}, under a hidden name, fsync'd, then rename all into place."""
    try:
        for path, save in saves.items():
            try:
                save(hidden_name(path))
                with open(hidden_name(path), "rb+") as written:
                    os.fsync(written.fileno())
            except (OSError, RuntimeError) as error:  # h5py raises RuntimeError on a full disk too
                raise DataError(f"cannot write '{path}' ({why_not_written(error)}): nothing was replaced; free some "
                                "space, or save elsewhere with --model-file") from None
        for path in saves:
            os.replace(hidden_name(path), path)
    finally:
        for path in saves:
            with contextlib.suppress(OSError):
                os.unlink(hidden_name(path))


def check_output_file(path, suffix):
    """Fail now, not after an hour of training, when a model cannot be saved as path."""
    folder = os.path.dirname(os.path.abspath(path))
    if not path.endswith(suffix) or path.endswith(".weights.h5"):
        raise DataError(f"cannot save a model as '{path}': --model-file must end in {suffix}" + (
            " (and not .weights.h5, the name of the weights saved beside it)" if suffix == ".h5" else ""))
    if not os.path.isdir(folder):
        raise DataError(f"cannot write '{path}': folder '{folder}' does not exist; create it or choose another "
                        "--model-file")
    if os.path.isdir(path):
        raise DataError(f"cannot write '{path}': it is a folder; choose another --model-file")
    try:  # a file made and removed tells on every system and drive, where os.access does not (Windows)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise DataError(f"cannot write '{path}' ({why_not_written(error)}): choose another --model-file") from None
