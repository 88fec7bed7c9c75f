//! The `warden` CLI, for the integration tests (see Cargo.toml).

fn main() -> std::process::ExitCode {
    warden_cli::main()
}
