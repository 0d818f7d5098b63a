"""Slugify a title using a dependency installed from the pack's requirements.txt."""
import json
import sys

import slugkit

params = json.load(sys.stdin)
print(json.dumps({"slug": slugkit.slugify(params["title"], params["separator"])}))
