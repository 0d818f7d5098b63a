"""Answers constraint questions with PyPI's `packaging`, for the differential test
(nats/tests/differential.rs). Reads JSON lines `[specifiers, version]` on stdin and writes one
JSON line per question: true or false, or null when packaging refuses the specifier set.
packaging is found on PYTHONPATH (scripts/lib.sh installs it)."""
import json
import sys

from packaging.specifiers import InvalidSpecifier, SpecifierSet

out = []
for line in sys.stdin:
    if not line.strip():
        continue
    spec, version = json.loads(line)
    try:
        out.append(json.dumps(SpecifierSet(spec).contains(version)))
    except InvalidSpecifier:
        out.append("null")
sys.stdout.write("\n".join(out) + "\n")
