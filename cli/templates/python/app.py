"""`{{name}}`: greets by name. It counts greetings per name in its own
key-value namespace, and asks the LLM for the greeting when the run may use
one (else it says hello itself)."""

import warden
from warden.kv import Bucket


@warden.agent
def run(input):
    name = (input or {}).get("name", "world")
    times = Bucket.open("greetings").increment(name)
    try:
        answer = warden.llm.chat(
            [warden.llm.Message.user(f"Write a one-line greeting for {name}.")],
            max_tokens=60,
        )
        greeting = answer.content.strip()
    except warden.LlmError as e:
        warden.log.warn(f"no greeting from the LLM ({e}); saying hello")
        greeting = f"hello, {name}"
    return {"greeting": greeting, "times": times}
