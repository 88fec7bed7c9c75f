//! Fails with the message it is given.
#[warden_sdk::agent]
fn run(message: String) -> Result<(), warden_sdk::Error> {
    Err(warden_sdk::Error::msg(message))
}
