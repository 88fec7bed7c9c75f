"""`research-agent`, in Python: a real tool-calling loop. The LLM chooses
tools — `fetch_url` (HTTP GET of an allowed URL) and `save_note` /
`read_notes` (notes in the agent's key-value namespace) — until it answers.
When the token budget runs out it stops cleanly and returns what it has,
marked `"stopped": "budget_exhausted"`.

    warden run research_agent.wasm --allow-model gpt-4o-mini --max-tokens 20000 \\
        --allow-http 'https://*.wikipedia.org' \\
        --input '{"question":"What is WASI? Start at https://en.wikipedia.org/wiki/WebAssembly"}'
"""

import warden
from warden import context, http, llm
from warden.kv import Bucket
from warden.llm import Message, Tool, ToolCall

# Longest page text handed back to the model.
MAX_PAGE_CHARS = 4000

TOOLS = [
    Tool(
        "fetch_url",
        "Fetch a web page (HTTP GET) and return the start of its text.",
        {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]},
    ),
    Tool(
        "save_note",
        "Save a short note under a key, to remember a finding.",
        {
            "type": "object",
            "properties": {"key": {"type": "string"}, "text": {"type": "string"}},
            "required": ["key", "text"],
        },
    ),
    Tool(
        "read_notes",
        "Read every note saved so far.",
        {"type": "object", "properties": {}},
    ),
]


def call_tool(call: ToolCall, notes: Bucket) -> str:
    args = call.args()
    try:
        if call.name == "fetch_url":
            url = args.get("url")
            if not isinstance(url, str):
                return "error: fetch_url needs a url"
            r = http.get(url)
            return f"HTTP {r.status}\n{r.text[:MAX_PAGE_CHARS]}"
        if call.name == "save_note":
            key, text = args.get("key"), args.get("text")
            if not (isinstance(key, str) and isinstance(text, str)):
                return "error: save_note needs key and text"
            notes.set(key, text)
            return f"saved note {key}"
        if call.name == "read_notes":
            return "\n".join(read_notes(notes))
        return f"error: no tool named {call.name}"
    except (warden.HttpError, warden.KvError) as e:
        return f"error: {e}"


def read_notes(notes: Bucket) -> list:
    out = []
    for key in notes.keys():
        value = notes.get(key)
        if value is not None:
            out.append(f"{key}: {value.decode('utf-8', errors='replace')}")
    return out


@warden.agent
def run(input):
    if not isinstance(input, dict) or not isinstance(input.get("question"), str):
        raise warden.AgentError("invalid input: missing field `question`")
    max_steps, model = input.get("max_steps", 8), input.get("model")
    if not isinstance(max_steps, int) or max_steps < 0:
        raise warden.AgentError("invalid input: `max_steps` must be a whole number")
    if model is not None and not isinstance(model, str):
        raise warden.AgentError("invalid input: `model` must be a string")

    notes = Bucket.open(f"notes-{context.run_id()}")
    messages = [
        Message.system(
            "You are a careful research agent. Use the tools to fetch sources and keep notes, "
            "then answer the question concisely, citing what you fetched."
        ),
        Message.user(input["question"]),
    ]
    out = {"answer": "", "stopped": "max_steps", "steps": 0, "tools_used": [], "notes": []}
    while out["steps"] < max_steps:
        out["steps"] += 1
        try:
            reply = llm.chat(messages, model=model, tools=TOOLS, max_tokens=800)
        except llm.BudgetExhausted:
            warden.log.warn("token budget exhausted; stopping with what we have")
            out["stopped"] = "budget_exhausted"
            break
        if not reply.tool_calls:
            out["answer"] = reply.content
            out["stopped"] = "answered"
            break
        messages.append(reply.message())
        for call in reply.tool_calls:
            warden.log.info(f"tool {call.name} {call.arguments}")
            out["tools_used"].append(call.name)
            messages.append(Message.tool_result(call.id, call_tool(call, notes)))
    out["notes"] = read_notes(notes)
    if not out["answer"] and out["notes"]:
        out["answer"] = "No final answer; notes so far: " + "; ".join(out["notes"])
    for key in notes.keys():
        notes.delete(key)
    return out
