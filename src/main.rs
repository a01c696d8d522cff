//! The `wagate` binary: everything lives in the library.
fn main() -> std::process::ExitCode {
    wagate::cli::main()
}
