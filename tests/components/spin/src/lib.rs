//! Spins forever: for wall-time budgets.
#[warden_sdk::agent]
fn run(_input: serde_json::Value) -> Result<(), warden_sdk::Error> {
    #[allow(clippy::empty_loop)]
    loop {}
}
