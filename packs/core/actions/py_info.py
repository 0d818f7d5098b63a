"""Report which interpreter ran this action, and what Attune told it."""
import json
import os
import platform
import sys

print(json.dumps({
    "python_version": platform.python_version(),
    "implementation": platform.python_implementation(),
    "executable": sys.executable,
    "runtime_version": os.environ.get("ATTUNE_RUNTIME_VERSION"),
}))
