"""Generate a small report; the point is the ~3.11 constraint on this action."""
import json
import platform
import sys

params = json.load(sys.stdin)
rows = [(i, i * i) for i in range(1, params["rows"] + 1)]
print(f"# python {platform.python_version()}")
for n, sq in rows:
    print(f"{n},{sq}" if params["format"] == "csv" else f"{n:>5} | {sq:>8}")
