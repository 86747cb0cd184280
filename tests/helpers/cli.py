"""`python -m anomaly.<entry> args…` as a user runs it, in a process of its own, without paying the
libraries' imports every time.

A command-line test wants what a user sees: the exit status, stdout and stderr of a fresh process
(its own argv, working directory, environment, signal handlers, Hydra state and `atexit`).
`subprocess.run([sys.executable, "-m", …])` gives that and pays torch's, Lightning's and
torchmetrics' imports every call (about 5 s of CPU: most of what a command-line test costs). `run`
gives the same from a fork of a server process (`python -m tests.helpers.cli`, one per test worker)
that imported those libraries once, and nothing of `anomaly`: each command still imports the package
under test afresh and exits as the interpreter would. What a fork cannot give (a library that reads an
environment variable when it is imported, or a test of what a command imports) uses `subprocess`.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Mapping, Sequence

ROOT = Path(__file__).resolve().parents[2]
# third-party libraries that read no setting of ours when imported
PRELOAD = ["torch", "torchvision", "lightning", "torchmetrics", "hydra", "omegaconf", "sklearn.svm", "scipy.stats",
           "rich.console"]


# ---- the server --------------------------------------------------------------------------------------
def _child(request: dict) -> None:
    """In the fork: `python -m module args` with stdout/stderr to the request's files; never returns."""
    import runpy

    os.setpgid(0, 0)  # its own process group: a timeout kills what it started too
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path in ((0, os.devnull), (1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_RDONLY if fd == 0 else os.O_WRONLY | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    sys.stdin = open(os.devnull)  # not the server's request pipe
    # as a fresh interpreter has them (SIGPIPE: ignored by Python's start-up in the server already)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.path[0] = request["cwd"]  # `-m` and `-c` put the working directory first
    code = 0
    try:
        if request["module"] == "-c":  # `python -c code args…`
            sys.argv = ["-c", *request["args"][1:]]
            exec(compile(request["args"][0], "<string>", "exec"), {"__name__": "__main__"})
        else:
            sys.argv = [request["module"], *request["args"]]
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        if isinstance(stop.code, int) or stop.code is None:
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - uncaught: the traceback and status 1, as python prints them
        import traceback

        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


def serve() -> None:
    """Read one request per line on stdin; fork it, answer its pid, wait, answer its exit status."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    print("ready", file=channel)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            channel.close()  # the answers are the server's alone
            _child(request)
        print(pid, file=channel)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), file=channel)


# ---- the client --------------------------------------------------------------------------------------
class _Server:
    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "tests.helpers.cli"], cwd=ROOT,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        atexit.register(self.process.kill)
        self.received = b""
        assert self.line(300) == "ready"

    def line(self, timeout: float) -> str | None:
        """The server's next line, or None after `timeout` seconds (read unbuffered: a pid and an
        exit status can arrive in one read)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.received:
            ready, _, _ = select.select([self.process.stdout], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self.process.stdout.fileno(), 4096) if ready else b""
            if not chunk:
                return None
            self.received += chunk
        line, self.received = self.received.split(b"\n", 1)
        return line.decode().strip()

    def start(self, request: dict) -> int:
        self.process.stdin.write((json.dumps(request) + "\n").encode())
        self.process.stdin.flush()
        return int(self.line(60))


_server: _Server | None = None


class Command:
    """A started `python -m module args…` (one at a time per test process): `pid`, `poll`,
    `send_signal`, and `wait`, which returns what `subprocess.run(…, capture_output=True, text=True)` would."""

    def __init__(self, module: str, args: Sequence[str], cwd: str | Path, env: Mapping[str, str] | None) -> None:
        global _server
        if _server is None or _server.process.poll() is not None:
            _server = _Server()
        self.server, self.argv = _server, [sys.executable, "-m", module, *args]
        env = dict(os.environ if env is None else env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.captured = tempfile.TemporaryDirectory(prefix="cli-")
        self.out, self.err = Path(self.captured.name) / "stdout", Path(self.captured.name) / "stderr"
        for path in (self.out, self.err):
            path.write_text("")
        self.pid = _server.start({"module": module, "args": list(args), "cwd": str(cwd), "env": env,
                                  "stdout": str(self.out), "stderr": str(self.err)})
        self.code: str | None = None

    def poll(self) -> int | None:
        """The exit status if it has ended, else None (as Popen.poll)."""
        if self.code is None:
            self.code = self.server.line(0)
        return None if self.code is None else int(self.code)

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float = 300) -> subprocess.CompletedProcess:
        code = self.code if self.code is not None else self.server.line(timeout)
        if code is None:  # the command and what it started
            os.killpg(self.pid, signal.SIGKILL)
            self.server.line(60)
            self.captured.cleanup()
            raise subprocess.TimeoutExpired(self.argv, timeout)
        try:
            return subprocess.CompletedProcess(self.argv, int(code), self.out.read_text(), self.err.read_text())
        finally:
            self.captured.cleanup()


def run(module: str, args: Sequence[str], cwd: str | Path, env: Mapping[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m module args…` (module "-c": `python -c args[0] args[1:]…`) in `cwd` with `env` (default: this process's environment), the
    repository first on PYTHONPATH, captured as `subprocess.run(…, capture_output=True, text=True)`."""
    return Command(module, args, cwd, env).wait(timeout)


if __name__ == "__main__":
    serve()
