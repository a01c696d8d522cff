//! The `wagate` binary: everything lives in the library.

/// mimalloc: the gate allocates small short-lived values (event maps, JSON, statements) on
/// many threads at once, where it spends far less time than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    wagate::cli::main()
}
