"""The code the pipeline's stages share: JSON scanning, mixing, validation, transports,
the registry, the layout, and the tools `make` runs (verify, preflight, check_upstream).

DVC runs each stage as `python -m stages.<name>` (and make its tools as
`python -m llava_data.<tool>`) with the first `python` on PATH. Under an
interpreter that lacks the project's packages (the system's, when DVC was started from
outside the environment), a stage stops here with one line saying what to do, instead of
a traceback from deep inside it.
"""

import importlib.util
import sys

_NEEDED = ("numpy", "orjson", "yaml", "PIL", "tqdm", "requests", "huggingface_hub")

_missing = [name for name in _NEEDED if importlib.util.find_spec(name) is None]
if _missing:
    sys.stderr.write(
        f"error: {sys.executable} lacks the project's packages ({', '.join(_missing)}): run "
        f"DVC inside the project's environment. Create it once with `make env`, enter it in "
        f"this shell with `. .venv/bin/activate`, then run the dvc command again.\n"
    )
    raise SystemExit(2)
