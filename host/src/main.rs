//! The `warden` command line; see `warden --help`.

fn main() -> std::process::ExitCode {
    warden_host::cli::main()
}
