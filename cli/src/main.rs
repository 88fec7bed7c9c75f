//! The `warden` command line; see `warden --help`.

fn main() -> std::process::ExitCode {
    warden_cli::main()
}
