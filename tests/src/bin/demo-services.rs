//! Stand-ins for the outside world, for the README's demo on a machine with
//! no LLM provider and no network: a fake OpenAI-compatible provider and a
//! small web page, both on loopback. Prints their URLs, then serves until
//! killed.
//!
//! Usage: demo-services [PORT]

use warden_tests::fake_openai::FakeOpenAi;

fn main() {
    let port = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let fake = FakeOpenAi::start_on(port);
    println!("{}", fake.server().url());
    loop {
        std::thread::park();
    }
}
