"""`sdk-tour`: calls every function of the Python SDK once, error paths
included, and returns what each gave as a JSON report. Input:
``{"web": "http://127.0.0.1:PORT"}`` (the mock LLM's origin, which serves
``/docs/wasm``), or ``{"fail": "agent" | "exception" | "output"}`` to end the
run in each of the ways a run can fail.
"""

import logging
import sys

import warden
from warden import config, context, http, kv, llm, log
from warden.llm import Message, Tool


def attempt(fn):
    """``fn()``'s value, or the exception it raised as ``Type: message``."""
    try:
        return fn()
    except Exception as e:
        return f"{type(e).__name__}: {e}"


def tour_context():
    r = context.remaining()
    return {
        "run_id_len": len(context.run_id()),
        "attempt": context.attempt(),
        "remaining": {
            "tokens": r.tokens,
            "cost_usd": r.cost_usd,
            "time_ms_positive": r.time_ms > 0,
        },
    }


def tour_config():
    return {
        "greeting": config.get("greeting"),
        "missing": config.get("missing"),
        "all": config.get_all(),
    }


def tour_log():
    log.trace("trace line")
    log.debug("debug line")
    log.info("info line")
    log.warn("warn line")
    log.error("error line")
    logging.getLogger("tour.std").warning("std logging, named logger")
    logging.info("std logging, root logger")
    logging.debug("std logging below INFO: dropped")
    print("print goes to stdout")
    print("stderr too", file=sys.stderr)
    return "see logs"


def tour_kv():
    out = {}
    with kv.Bucket.open() as b:  # "default"
        out["get_missing"] = b.get("nope")
        out["get_text_missing"] = b.get_text("nope")
        out["get_json_missing"] = b.get_json("nope")
        out["exists_missing"] = b.exists("nope")
        b.set("bytes", b"\xff\x00")
        b.set("text", "héllo")
        b.set_json("json", {"a": [1, 2]})
        out["get_bytes"] = list(b.get("bytes"))
        out["get_text"] = b.get_text("text")
        out["get_json"] = b.get_json("json")
        out["get_json_not_json"] = attempt(lambda: b.get_json("text"))
        out["get_text_not_utf8"] = attempt(lambda: b.get_text("bytes"))
        out["exists"] = b.exists("text")
        out["increment"] = [b.increment("n"), b.increment("n", 5)]
        out["increment_negative"] = attempt(lambda: b.increment("n", -1))
        out["cas_absent"] = b.compare_and_swap("cas", None, b"v1")
        out["cas_stale"] = b.compare_and_swap("cas", b"v0", b"v2")
        out["cas_current"] = b.compare_and_swap("cas", "v1", "v2")
        out["cas_value"] = b.get_text("cas")
        out["keys"] = b.keys()
        for key in b.keys():
            b.delete(key)
        out["keys_after_delete"] = b.keys()
        b.delete("never-there")
    other = kv.Bucket.open("other")
    other.set("k", "v")
    out["other_bucket_keys"] = other.keys()
    other.delete("k")
    other.close()
    return out


def tour_http(web):
    page = http.get(f"{web}/docs/wasm")
    posted = http.post(f"{web}/v1/embeddings", {"model": "m", "input": ["abc"]})
    raw = http.post(
        f"{web}/v1/embeddings", '{"input":["abcd"]}', {"content-type": "application/json"}
    )
    missing = http.request("GET", f"{web}/nope", headers=[("accept", "text/plain")])

    def denied():
        try:
            http.get("https://example.com/")
        except warden.HttpError as e:
            return {"denied": e.denied, "message": str(e)}

    return {
        "get": {
            "status": page.status,
            "text": page.text[:40],
            "content_type": page.header("Content-Type"),
        },
        "post_json": {"status": posted.status, "dims": len(posted.json()["data"][0]["embedding"])},
        "post_text": {"status": raw.status, "dims": len(raw.json()["data"][0]["embedding"])},
        "request_404": {"status": missing.status, "body": missing.text},
        "json_of_text": attempt(page.json),
        "denied": denied(),
        "bad_url": attempt(lambda: http.get("ftp://example.com/")),
        "bad_header": attempt(lambda: http.get(f"{web}/docs/wasm", {"bad name": "x"})),
        "headers_are_pairs": all(
            isinstance(k, str) and isinstance(v, str) for k, v in page.headers
        ),
    }


def tour_llm():
    plain = llm.chat(
        [
            Message.system("Be brief."),
            {"role": "user", "content": "What is WebAssembly, in short?"},
        ],
        model="tour-model",
        max_tokens=30,
        temperature=0.2,
        json_output=True,
    )
    tools = [
        Tool(
            "fetch_url",
            "Fetch a page.",
            {"type": "object", "properties": {"url": {"type": "string"}}},
        )
    ]
    asked = llm.chat([Message.user("Read http://example.com/a please")], tools=tools)
    call = asked.tool_calls[0]
    followup = llm.chat(
        [
            Message.user("Read http://example.com/a please"),
            asked.message(),
            Message.tool_result(call.id, "a page"),
        ],
        tools=tools,
    )
    vectors = llm.embed(["one", "three"], model="tour-embed")

    def not_allowed():
        try:
            llm.chat([Message.user("hi")], model="forbidden-model")
        except llm.ModelNotAllowed as e:
            return {
                "is_llm_error": isinstance(e, warden.LlmError),
                "message": str(e),
                "model": e.model,
            }

    def exhaust():
        for n in range(1, 50):
            try:
                llm.chat([Message.user("spend tokens " * 20)], model="tour-model")
            except warden.BudgetExhausted as e:
                return {
                    "after_calls": n,
                    "message": str(e),
                    "tokens_left": context.remaining().tokens,
                }
        return "never exhausted"

    return {
        "plain": {
            "content": plain.content,
            "finish_reason": plain.finish_reason,
            "usage": vars(plain.usage),
            "model": plain.model,
            "tool_calls": plain.tool_calls,
        },
        "tool_call": {"name": call.name, "args": call.args(), "finish_reason": asked.finish_reason},
        "after_tool": {"content": followup.content, "tool_calls": len(followup.tool_calls)},
        "embed": {"count": len(vectors), "dims": len(vectors[0])},
        "model_not_allowed": not_allowed(),
        "embed_not_allowed": attempt(lambda: llm.embed(["x"], model="forbidden-model")),
        "budget_exhausted": exhaust(),
    }


@warden.agent
def run(input):
    fail = (input or {}).get("fail")
    if fail == "agent":
        raise warden.AgentError("the agent gave up")
    if fail == "exception":
        return {"x": 1 / 0}
    if fail == "output":
        return {"x": object()}
    web = (input or {}).get("web", "http://127.0.0.1:8080")
    return {
        "context": tour_context(),
        "config": tour_config(),
        "log": tour_log(),
        "kv": tour_kv(),
        "http": tour_http(web),
        "llm": tour_llm(),
    }
