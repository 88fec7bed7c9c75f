"""`kv-counter`, in Python: counts how often it was called for a key; the
count lives in the agent's key-value namespace and survives across runs.

    warden run kv_counter.wasm --input '{"key":"visits"}'   # {"count":1,"key":"visits","keys":["visits"]}
    warden run kv_counter.wasm --input '{"key":"visits"}'   # {"count":2,"key":"visits","keys":["visits"]}
"""

import warden
from warden.kv import Bucket


@warden.agent
def run(input):
    if input is not None and not isinstance(input, dict):
        raise warden.AgentError('invalid input: expected an object like {"key": "visits"}')
    key = (input or {}).get("key", "visits")
    if not isinstance(key, str):
        raise warden.AgentError("invalid input: `key` must be a string")
    counters = Bucket.open("counters")
    count = counters.increment(key)
    warden.log.info(f"{key} is now {count}")
    return {"key": key, "count": count, "keys": counters.keys()}
