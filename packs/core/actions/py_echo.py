"""Echo the JSON parameters received on stdin."""
import json
import sys

print(json.dumps(json.load(sys.stdin)))
