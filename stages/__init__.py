"""The pipeline's stages: one module per stage of dvc.yaml, each a thin entry point.

Their shared code lives in `llava_data`; importing it first stops a stage started under
an interpreter that lacks the project's packages, with one line saying what to do.
"""

import llava_data  # noqa: F401
