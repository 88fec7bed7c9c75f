//! Agents in Rust, Python and JavaScript side by side, in one sitting
//! (issue 26): the same two agents (`kv-counter`, `research-agent`) as the
//! Rust examples and their Python and JS ports (built with `warden build`
//! into `target/{python,js}-agents/` if missing).
//!
//! For each: the component's size; a cold compile (an empty cache); a warm
//! load (from the compile cache); the time of one run inside a node (a
//! sandbox as a node holds it: fresh instance, run, drop; the research
//! agent against a loopback stand-in LLM and web page); a whole `warden
//! run` process with a warm cache. Then memory: N research agents waiting
//! at once on an LLM that holds every call (a stand-in in a process of its
//! own), this process's RSS and PSS (`/proc/self/smaps_rollup`) before and
//! while they wait, per waiting agent. RSS counts every shared page of the
//! components' copy-on-write memory images once per instance that maps it;
//! PSS divides shared pages among their mappers: it is the physical cost.
//!
//! Run: `cargo bench -p warden-tests --bench languages -- [WAITING_PYTHON]
//! [WAITING_OTHERS]` (defaults 5000 and 1000); `WARDEN_BENCH_ONLY=speed` or
//! `=waiting` runs one of the two tables.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use warden_core::Grant;
use warden_host::engine::Quiet;
use warden_host::{AgentComponent, RunRequest, Sandbox};
use warden_tests::fake_openai::FakeOpenAi;
use warden_tests::{examples, sandbox_with};

/// Set in the child that serves the holding LLM.
const HOLDING_LLM: &str = "WARDEN_BENCH_HOLDING_LLM";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Agent {
    lang: &'static str,
    name: &'static str,
    path: PathBuf,
}

/// The component of `name` in `lang`, built if missing.
fn component(lang: &'static str, name: &'static str) -> Agent {
    let path = match lang {
        "rust" => PathBuf::from(match name {
            "kv-counter" => examples::KV_COUNTER,
            _ => examples::RESEARCH_AGENT,
        }),
        _ => {
            let out = root().join(format!("target/{lang}-agents/{name}.wasm"));
            if !out.is_file() {
                let dir = root().join("examples").join(lang).join(name);
                let status = Command::new(env!("CARGO_BIN_EXE_warden-cli"))
                    .args([
                        "build",
                        dir.to_str().unwrap(),
                        "--out",
                        out.to_str().unwrap(),
                    ])
                    .env(
                        "WARDEN_DATA_DIR",
                        root().join(format!("target/{lang}-agents/data")),
                    )
                    .status()
                    .unwrap();
                assert!(status.success(), "warden build {lang} {name}");
            }
            out
        }
    };
    Agent { lang, name, path }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// What a run of `agent` is given: its manifest's grant, the stand-in's
/// origin for the research agent.
fn request(agent: &Agent, web: &str) -> RunRequest {
    let (input, grant) = match agent.name {
        "kv-counter" => (
            r#"{"key":"bench"}"#.to_string(),
            Grant {
                kv: true,
                ..Grant::default()
            },
        ),
        _ => (
            format!(r#"{{"question":"What is Wasm? Start at {web}/docs/wasm","model":"m"}}"#),
            Grant {
                kv: true,
                models: vec!["*".into()],
                http: vec![web.to_string()],
                ..Grant::default()
            },
        ),
    };
    let mut req = RunRequest::new(agent.name.replace('-', "_"), input);
    req.grant = grant;
    // Long enough to wait through the ramp of thousands of instances.
    req.budget.timeout = Duration::from_secs(600);
    req
}

fn sandbox(dir: &Path, llm: &str, slots: u32) -> Sandbox {
    sandbox_with(dir, |c| {
        c.llm.base_url = Some(llm.to_string());
        c.engine.pool_slots = slots;
        c.limits.max_memory_bytes = 64 << 20;
        c.limits.timeout = Duration::from_secs(600);
    })
}

fn load(sb: &Sandbox, agent: &Agent) -> (AgentComponent, Duration) {
    let bytes = std::fs::read(&agent.path).unwrap();
    let started = Instant::now();
    let (component, _) = sb.engine().load(agent.name, &bytes, &Quiet).unwrap();
    (component, started.elapsed())
}

/// One row of the speed table.
fn speed(agent: &Agent, rt: &tokio::runtime::Runtime, fake: &FakeOpenAi) -> String {
    let web = fake.server().url();
    let size = std::fs::metadata(&agent.path).unwrap().len();
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), &fake.base_url(), 8);
    let (_, cold) = load(&sb, agent);
    let warm = median(
        (0..9)
            .map(|_| ms(load(&sandbox(dir.path(), &fake.base_url(), 8), agent).1))
            .collect(),
    );
    let (component, _) = load(&sb, agent);
    let mut runs = Vec::new();
    for i in 0..210 {
        let started = Instant::now();
        let out = rt.block_on(sb.run(&component, request(agent, &web)));
        let took = started.elapsed();
        assert!(
            out.result.is_ok(),
            "{} {}: {:?}",
            agent.lang,
            agent.name,
            out.result
        );
        if i >= 10 {
            runs.push(ms(took));
        }
    }
    let run_median = median(runs.clone());
    runs.sort_by(f64::total_cmp);
    let p90 = runs[runs.len() * 9 / 10];
    // A whole `warden run` process, its compile cache warm (one run first).
    let manifest = root().join("examples/kv-counter/warden.toml");
    let process = |input: &str| {
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_warden-cli"))
            .args([
                "run",
                agent.path.to_str().unwrap(),
                "--json",
                "--input",
                input,
            ])
            .args(["--manifest", manifest.to_str().unwrap()])
            .env("WARDEN_DATA_DIR", dir.path().join("cli"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ms(started.elapsed())
    };
    let input = request(agent, &web).input;
    let input = if agent.name == "kv-counter" {
        r#"{"key":"cli"}"#.to_string()
    } else {
        input
    };
    let whole = if agent.name == "kv-counter" {
        // The research manifest's `*://*:*` does not cover loopback and a
        // flag cannot widen a manifest: time the kv agent only.
        process(&input);
        format!(
            "{:.0} ms",
            median((0..5).map(|_| process(&input)).collect())
        )
    } else {
        "".into()
    };
    format!(
        "| {} | {} | {:.1} MiB | {:.1} s | {:.2} ms | {:.2} ms | {:.2} ms | {} |",
        agent.lang,
        agent.name,
        size as f64 / (1 << 20) as f64,
        cold.as_secs_f64(),
        warm,
        run_median,
        p90,
        whole
    )
}

/// `Rss` and `Pss` of this process, in bytes.
fn rss_pss() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| {
                v.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap()
                    * 1024
            })
            .unwrap()
    };
    (field("Rss:"), field("Pss:"))
}

/// N research agents of `agent` waiting at once on the holding LLM; a row
/// of the memory table.
fn waiting(agent: &Agent, n: usize, rt: &tokio::runtime::Runtime) -> String {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(HOLDING_LLM, "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let base = line.trim().to_string();
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), &format!("{base}/v1"), n as u32 + 8);
    let (component, _) = load(&sb, agent);
    let web = base.clone();
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str| -> String {
        let req = http.request(method, format!("{base}{path}"));
        rt.block_on(async { req.send().await.unwrap().text().await.unwrap() })
    };
    let held = || -> usize { call(reqwest::Method::GET, "/held").parse().unwrap() };
    // Warm: a few runs through, answered at once (the stand-in answers
    // calls at once until told to hold).
    for _ in 0..3 {
        let out = rt.block_on(sb.run(&component, request(agent, &web)));
        assert!(out.result.is_ok(), "{:?}", out.result);
    }
    call(reqwest::Method::POST, "/hold");
    let (rss0, pss0) = rss_pss();
    let started = Instant::now();
    let sb = std::sync::Arc::new(sb);
    let component = std::sync::Arc::new(component);
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (sb, component, req) = (sb.clone(), component.clone(), request(agent, &web));
            rt.spawn(async move { sb.run(&component, req).await })
        })
        .collect();
    while held() < n {
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "only {} of {n} waiting",
            held()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let ramp = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let (rss1, pss1) = rss_pss();
    call(reqwest::Method::POST, "/release");
    let mut ok = 0;
    for task in tasks {
        match rt.block_on(task).unwrap().result {
            Ok(_) => ok += 1,
            Err(e) => eprintln!("{} waiting run failed: {e}", agent.lang),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    format!(
        "| {} | {n} | {:.0} s | {:.0} MiB | {:.0} MiB | {:.2} MiB | {:.0} MiB | {:.0} MiB | **{:.2} MiB** | {ok}/{n} |",
        agent.lang,
        ramp.as_secs_f64(),
        mib(rss0),
        mib(rss1),
        mib(rss1.saturating_sub(rss0)) / n as f64,
        mib(pss0),
        mib(pss1),
        mib(pss1.saturating_sub(pss0)) / n as f64,
    )
}

/// The holding LLM: answers at once until `POST /hold`, then holds every
/// chat call until `POST /release`; `GET /held` counts the held calls. The
/// answer ends the research agent's loop (content, no tool calls).
fn holding_llm() {
    use axum::routing::{get, post};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let holding = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::watch::channel(false);
        let chat = {
            let (holding, held) = (holding.clone(), held.clone());
            post(move || {
                let (holding, held, mut released) = (holding.clone(), held.clone(), released.clone());
                async move {
                    if holding.load(Ordering::SeqCst) {
                        held.fetch_add(1, Ordering::SeqCst);
                        let _ = released.wait_for(|r| *r).await;
                    }
                    axum::Json(serde_json::json!({
                        "id": "held", "object": "chat.completion", "model": "m",
                        "choices": [{ "index": 0, "finish_reason": "stop",
                            "message": { "role": "assistant", "content": "Done waiting." } }],
                        "usage": { "prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13 },
                    }))
                }
            })
        };
        let app = axum::Router::new()
            .route("/v1/chat/completions", chat)
            .route("/held", get(move || async move { held.load(Ordering::SeqCst).to_string() }))
            .route("/hold", post(move || async move { holding.store(true, Ordering::SeqCst) }))
            .route("/release", post(move || async move { let _ = release.send(true); }))
            .route("/docs/wasm", get(|| async { warden_tests::fake_openai::WASM_DOC }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("http://{}", listener.local_addr().unwrap());
        axum::serve(listener, app).await.unwrap();
    });
}

fn main() {
    if std::env::var_os(HOLDING_LLM).is_some() {
        return holding_llm();
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let n_python: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5000);
    let n_others: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fake = FakeOpenAi::start();
    let only = std::env::var("WARDEN_BENCH_ONLY").unwrap_or_default();
    if only != "waiting" {
        println!(
            "| language | agent | size | cold compile | warm load | run in a node, median | p90 | warm `warden run` process |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for name in ["kv-counter", "research-agent"] {
            for lang in ["rust", "python", "js"] {
                println!("{}", speed(&component(lang, name), &rt, &fake));
            }
        }
    }
    if only == "speed" {
        return;
    }
    println!();
    println!(
        "| language | waiting agents | all waiting after | RSS before | RSS while waiting | RSS per agent | PSS before | PSS while waiting | PSS per agent | succeeded |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (lang, n) in [("rust", n_others), ("js", n_others), ("python", n_python)] {
        println!("{}", waiting(&component(lang, "research-agent"), n, &rt));
    }
}
