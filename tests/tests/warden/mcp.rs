//! Agents as MCP tools: the official MCP Python SDK (PyPI `mcp`) as the
//! client, over real HTTPS, against a control plane process with TLS and
//! tokens.

use crate::http_api::api_cluster;
use serde_json::Value;
use warden_tests::cluster::{publish_with, try_publish_as};
use warden_tests::examples;

/// What the client does: initialize, list the tools, call one if asked;
/// prints what it saw as one JSON object.
const CLIENT: &str = r#"
import asyncio, json, ssl, sys
import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

async def main(url, token, ca, call):
    out = {}
    tls = ssl.create_default_context(cafile=ca)
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, verify=tls, timeout=90) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                out["server"] = init.server_info.name
                listed = await session.list_tools()
                out["tools"] = [
                    {"name": t.name, "title": t.title, "description": t.description,
                     "input_schema": t.input_schema}
                    for t in listed.tools
                ]
                if call:
                    name, arguments = json.loads(call)
                    try:
                        result = await session.call_tool(name, arguments)
                        out["call"] = {
                            "is_error": result.is_error,
                            "text": [c.text for c in result.content],
                            "structured": result.structured_content,
                        }
                    except Exception as e:
                        out["call_error"] = str(e)
    print(json.dumps(out))

asyncio.run(main(*sys.argv[1:5]))
"#;

/// Runs the MCP client as `token`, calling `call` (`[name, arguments]`)
/// if given.
async fn client(url: &str, token: &str, ca: &std::path::Path, call: Option<Value>) -> Value {
    let out = tokio::process::Command::new("python3")
        .args(["-c", CLIENT, url, token, ca.to_str().unwrap()])
        .arg(call.map(|c| c.to_string()).unwrap_or_default())
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the MCP client failed:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

const MANIFEST: &str = r#"
[tool]
description = "Greets someone by name"
input_schema = '{"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}'
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_client_lists_a_tenant_s_agents_and_calls_one_and_another_tenant_sees_none() {
    let (c, _procs, _http, base) = api_cluster().await;
    // hello@1 (no manifest) is there; hello@2, newer, describes itself.
    publish_with(c.channel().await, examples::HELLO, "hello@2", MANIFEST).await;
    // Another tenant's hello@3, newer still, is not this tenant's tool
    // (though the admin token's system role could list every tenant's).
    let other = c.token("acme", "admin");
    try_publish_as(c.channel().await, examples::HELLO, "hello@3", "", &other)
        .await
        .unwrap();
    let url = format!("{base}/v1/mcp");

    let mine = client(
        &url,
        &c.admin,
        &c.ca,
        Some(serde_json::json!(["hello", { "name": "mcp" }])),
    )
    .await;
    assert_eq!(mine["server"], "warden", "{mine}");
    let tools = mine["tools"].as_array().unwrap();
    assert_eq!(
        tools.len(),
        1,
        "one tool per agent, its newest version: {mine}"
    );
    assert_eq!(tools[0]["name"], "hello");
    assert_eq!(tools[0]["title"], "hello@2");
    assert_eq!(tools[0]["description"], "Greets someone by name");
    assert_eq!(tools[0]["input_schema"]["required"][0], "name", "{mine}");
    let call = &mine["call"];
    assert_eq!(call["is_error"], false, "{mine}");
    assert_eq!(call["structured"]["greeting"], "hello, mcp", "{mine}");
    assert_eq!(call["structured"]["echo"]["name"], "mcp", "{mine}");
    // The call was a run of hello@2 like any other.
    let runs = crate::json(&c.cli(&["runs", "list", "--json"]));
    assert_eq!(runs[0]["agent"], "hello@2", "{runs}");
    assert_eq!(runs[0]["state"], "succeeded", "{runs}");

    // The other tenant sees its own hello only, and a call runs its own.
    let call = serde_json::json!(["hello", { "name": "acme" }]);
    let theirs = client(&url, &other, &c.ca, Some(call)).await;
    let tools = theirs["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 1, "{theirs}");
    assert_eq!(tools[0]["title"], "hello@3", "{theirs}");
    assert_eq!(
        theirs["call"]["structured"]["echo"]["name"], "acme",
        "{theirs}"
    );
    // A third tenant sees no tools, and cannot call one.
    let third = c.token("third", "admin");
    let none = client(&url, &third, &c.ca, Some(serde_json::json!(["hello", {}]))).await;
    assert_eq!(none["tools"], serde_json::json!([]), "{none}");
    let refused = none["call_error"].as_str().unwrap_or_default();
    assert!(refused.contains("no tool named hello"), "{none}");

    // A viewer may list but not call: a call is a submit.
    let viewer = c.token("default", "viewer");
    let seen = client(
        &url,
        &viewer,
        &c.ca,
        Some(serde_json::json!(["hello", { "name": "v" }])),
    )
    .await;
    assert_eq!(seen["tools"].as_array().unwrap().len(), 1, "{seen}");
    assert!(seen.get("call").is_none(), "a viewer's call ran: {seen}");
    let refused = seen["call_error"].as_str().unwrap_or_default();
    assert!(
        refused.contains("role is viewer") && refused.contains("needs submitter"),
        "{seen}"
    );
}
