"""Faults for tests/test_faults.py, injected into one stage process of a real `dvc repro`.

Python imports this module at start-up only when the fault tests put this folder on
PYTHONPATH; it then acts only in the process started as `python -m <stage module>`:

- LLAVA_FAULT=<module>:<kill-before|kill-after|pause-before>:<n>[:<folder>] — at the
  n-th call of os.replace in that stage, SIGKILL the process (before or after the rename
  is done), or create <folder>/paused and wait until <folder>/release exists.
- LLAVA_FAULT_FSIZE=<module>:<bytes> — a file-size limit on that stage process, as a
  full disk would stop its writes (Python ignores SIGXFSZ, so a write fails with EFBIG).
"""

import os
import sys


def _stage_module():
    argv = getattr(sys, "orig_argv", [])
    return argv[argv.index("-m") + 1] if "-m" in argv[:-1] else None


def _install():
    module = _stage_module()
    fsize = os.environ.get("LLAVA_FAULT_FSIZE", "")
    if fsize and fsize.split(":")[0] == module:
        import resource

        limit = int(fsize.split(":")[1])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    spec = os.environ.get("LLAVA_FAULT", "")
    if not spec or spec.split(":")[0] != module:
        return
    _, action, nth, *rest = spec.split(":")
    nth = int(nth)
    real_replace = os.replace
    calls = [0]

    def replace(src, dst, *args, **kwargs):
        calls[0] += 1
        hit = calls[0] == nth
        if hit and action == "kill-before":
            _kill()
        if hit and action == "pause-before":
            _pause(rest[0])
        real_replace(src, dst, *args, **kwargs)
        if hit and action == "kill-after":
            _kill()

    os.replace = replace


def _kill():
    import signal

    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _pause(folder):
    import time

    open(os.path.join(folder, "paused"), "w").close()
    deadline = time.monotonic() + 300
    while not os.path.exists(os.path.join(folder, "release")) and time.monotonic() < deadline:
        time.sleep(0.05)


_install()
