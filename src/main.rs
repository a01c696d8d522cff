//! The `wagate` binary: everything lives in the library.

/// mimalloc: the gate allocates small short-lived values (event maps, JSON, statements) on
/// many threads at once, where it spends far less time than the system allocator. Built with
/// `no_thp`: it does not ask the kernel for transparent huge pages, each of which is a 2 MiB
/// block zeroed and held whole for a few small values; without them an idle gate with two
/// users holds 21 MB instead of 31 MB, one with a thousand users 58 MB instead of 92 MB, and an
/// export of 300,000 messages peaks at 15 MB instead of 22 MB (`wagate bench --only rest,export`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    wagate::cli::main()
}
