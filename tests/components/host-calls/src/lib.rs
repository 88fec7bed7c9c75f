//! Makes the host calls its input lists, with whatever arguments it gives,
//! and reports each answer: the fuzz test's way of calling every host
//! function Warden grants with hostile arguments through a real run.
//!
//! Input: a list of calls, each `{"call": NAME, "a": TEXT, "b": TEXT,
//! "n": NUMBER, "x": NUMBER, "bytes": [BYTES]}` (fields as the call needs).
use serde_json::{Value, json};
use warden_sdk::kv::Bucket;
use warden_sdk::llm::{self, ChatRequest, Message};

#[derive(serde::Deserialize)]
struct Call {
    call: String,
    #[serde(default)]
    a: String,
    #[serde(default)]
    b: String,
    #[serde(default)]
    n: u64,
    #[serde(default)]
    x: f64,
    #[serde(default)]
    bytes: Vec<u8>,
}

fn answer<T: serde::Serialize, E: std::fmt::Display>(r: Result<T, E>) -> Value {
    match r {
        Ok(v) => json!({ "ok": v }),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

#[warden_sdk::agent]
fn run(calls: Vec<Call>) -> Result<Vec<Value>, warden_sdk::Error> {
    let mut out = Vec::new();
    for c in calls {
        let bucket = || Bucket::open(&c.a);
        out.push(match c.call.as_str() {
            "kv.set" => answer(bucket().and_then(|b| b.set(&c.b, &c.bytes))),
            "kv.get" => answer(bucket().and_then(|b| b.get(&c.b))),
            "kv.delete" => answer(bucket().and_then(|b| b.delete(&c.b))),
            "kv.exists" => answer(bucket().and_then(|b| b.exists(&c.b))),
            "kv.keys" => answer(bucket().and_then(|b| b.keys()).map(|k| k.len())),
            "kv.increment" => answer(bucket().and_then(|b| b.increment(&c.b, c.n))),
            "kv.cas" => answer(bucket().and_then(|b| {
                b.compare_and_swap(
                    &c.b,
                    (!c.bytes.is_empty()).then_some(&c.bytes[..1]),
                    &c.bytes,
                )
            })),
            "llm.chat" => {
                let mut req = ChatRequest::new(vec![Message::user(c.b.clone())]);
                req.model = (!c.a.is_empty()).then(|| c.a.clone());
                req.max_tokens = Some(c.n.min(u64::from(u32::MAX)) as u32);
                req.temperature = Some(c.x as f32);
                answer(llm::chat(&req).map(|r| r.usage.completion_tokens))
            }
            "llm.embed" => answer(
                llm::embed(
                    (!c.a.is_empty()).then_some(c.a.as_str()),
                    std::slice::from_ref(&c.b),
                )
                .map(|v| v.len()),
            ),
            "http.get" => answer(warden_sdk::http::get(&c.a).map(|r| r.status)),
            "config.get" => json!({ "ok": warden_sdk::config::get(&c.a) }),
            "log" => {
                match c.n % 5 {
                    0 => warden_sdk::log::trace(&c.b),
                    1 => warden_sdk::log::debug(&c.b),
                    2 => warden_sdk::log::info(&c.b),
                    3 => warden_sdk::log::warn(&c.b),
                    _ => warden_sdk::log::error(&c.b),
                }
                json!({ "ok": null })
            }
            "fs.write" => answer(std::fs::write(&c.a, &c.bytes)),
            "fs.read" => answer(std::fs::read(&c.a).map(|b| b.len())),
            "fs.mkdir" => answer(std::fs::create_dir_all(&c.a)),
            other => json!({ "error": format!("no call {other}") }),
        });
    }
    Ok(out)
}
