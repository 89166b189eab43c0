//! The `journal-server` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    journal_server::main()
}
