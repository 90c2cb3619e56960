"""Run by each multi-GPU worker before it imports the pack: ComfyUI reads its command-line settings on first import
(`--cpu`, attention backend, precision), so the worker takes rank 0's parsed settings instead of its own empty
command line. Plain script (no package imports): it runs before the pack exists in the worker."""
import base64
import os
import pickle

import comfy.cli_args

_SETTINGS = os.environ.get("DIT_ACCEL_COMFY_ARGS")
if _SETTINGS:
    vars(comfy.cli_args.args).update(pickle.loads(base64.b64decode(_SETTINGS)))
