"""Summary statistics of a list of numbers; declared for python >= 3.13."""
import json
import platform
import statistics
import sys

numbers = json.load(sys.stdin)["numbers"]
print(json.dumps({
    "count": len(numbers),
    "mean": statistics.fmean(numbers),
    "median": statistics.median(numbers),
    "python_version": platform.python_version(),
}))
