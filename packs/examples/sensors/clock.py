"""Emit one JSON event per line on stdout; Attune publishes each on attune.events.examples.tick."""
import json
import sys
import time

while True:
    print(json.dumps({"trigger": "tick", "payload": {"at": time.time()}}), flush=True)
    time.sleep(5)
