//! Node start to first run, with a cold cache (empty data dir: fetch the
//! component, verify, compile) and a warm one (blob and compiled artifact on
//! disk from an earlier node), side by side in one process, alternating.
//! The agent is the largest example, `research-agent`, answering through a
//! loopback stand-in for the LLM and web.
//!
//! Run: `cargo bench -p warden-tests --bench node_start -- [ROUNDS]`.

use std::time::{Duration, Instant};
use warden_control_plane::ControlPlane;
use warden_proto::v1 as pb;
use warden_tests::cluster::{connect, publish_with, submit};
use warden_tests::fake_openai::FakeOpenAi;
use warden_tests::in_process::Node;
use warden_tests::{examples, sandbox_with};

struct Sample {
    /// NodeAgent created (engine built) → first run recorded succeeded.
    start_to_first_run: Duration,
    /// Of which: the component load (blob, verify, compile or deserialize,
    /// pre-instantiate), as the node timed it.
    component_load: Duration,
}

/// The control plane, the stand-ins and the run every sample queues.
struct Bench {
    cp: ControlPlane,
    ch: warden_tests::cluster::Conn,
    url: String,
    llm: String,
    input: String,
    grant: pb::Grant,
}

impl Bench {
    /// Queues one run, starts a node on `dir`, times it to the run's end.
    async fn one_start(&self, dir: &std::path::Path) -> Sample {
        // Queue the run first, so the node's start is the only thing timed.
        let id = submit(self.ch.clone(), "research-agent@1", &self.input, |r| {
            r.grant = Some(self.grant.clone())
        })
        .await;
        let started = Instant::now();
        let llm = self.llm.clone();
        let sandbox = sandbox_with(dir, move |c| {
            c.engine.pool_slots = 4;
            c.llm.base_url = Some(llm);
        });
        let node = Node::start(
            &self.url,
            &format!("bench-{}", rand_id()),
            sandbox,
            dir,
            4,
            &[],
        );
        loop {
            let run = self.cp.store().get_run(None, &id).unwrap().unwrap();
            let state = warden_core::RunState::from_proto(run.run_state).unwrap();
            if state == warden_core::RunState::Succeeded {
                break;
            }
            assert!(
                !state.is_terminal(),
                "the run ended {state}: {}",
                run.error_message
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        let sample = Sample {
            start_to_first_run: started.elapsed(),
            component_load: node.agent.last_component_load(),
        };
        node.stop().await;
        sample
    }
}

fn rand_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(7);
    let tmp = tempfile::tempdir().unwrap();
    let (cp, url) = warden_tests::in_process::control_plane(tmp.path()).await;
    let ch = connect(&url).await;
    let fake = FakeOpenAi::start();
    let web = fake.server().url();
    // The example's manifest declares `*://*:*`, which covers public hosts
    // only; the fake web is on loopback, so the manifest names it too.
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/research-agent/warden.toml"),
    )
    .unwrap()
    .replace(
        r#"http = ["*://*:*"]"#,
        &format!(r#"http = ["*://*:*", "{web}"]"#),
    );
    publish_with(
        ch.clone(),
        examples::RESEARCH_AGENT,
        "research-agent@1",
        &manifest,
    )
    .await;
    let input = format!(r#"{{"question":"What is Wasm? Start at {web}/docs/wasm","model":"m"}}"#);
    // The fake web is on loopback: the run names it explicitly.
    let grant = pb::Grant {
        http: vec![web.clone()],
        models: vec!["m".into()],
        kv: true,
        ..pb::Grant::default()
    };

    let bench = Bench {
        cp,
        ch,
        url,
        llm: fake.base_url(),
        input,
        grant,
    };

    let warm_dir = tmp.path().join("warm");
    // Fill the warm dir once.
    bench.one_start(&warm_dir).await;

    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        cold.push(
            bench
                .one_start(&tmp.path().join(format!("cold-{round}")))
                .await,
        );
        warm.push(bench.one_start(&warm_dir).await);
    }
    let size = std::fs::metadata(examples::RESEARCH_AGENT).unwrap().len();
    let report = |name: &str, s: &[Sample]| {
        let total = median(s.iter().map(|s| s.start_to_first_run).collect());
        let load = median(s.iter().map(|s| s.component_load).collect());
        println!(
            "{name}: node start -> first run of research-agent ({size} bytes): median {:.1} ms; component load {:.2} ms",
            ms(total),
            ms(load)
        );
        (total, load)
    };
    let (cold_total, cold_load) = report("cold", &cold);
    let (warm_total, warm_load) = report("warm", &warm);
    println!(
        "warm/cold over {rounds} alternating rounds: start to first run {:.1}x faster, component load {:.0}x faster",
        cold_total.as_secs_f64() / warm_total.as_secs_f64(),
        cold_load.as_secs_f64() / warm_load.as_secs_f64()
    );
}
