//! The commands' standard output. `wagate runs | head -3` closes the pipe early: the rest of
//! the output has no reader, and the command ends quietly (exit 0, as `grep` or `rg` do)
//! instead of panicking. SIGPIPE stays ignored (Rust's default), so that a socket closed by
//! a peer is an error the code handles (the gate, a send in flight), never a killed process.

use std::io::Write;

/// Writes `args` to stdout (see [`print!`] in cli/mod.rs).
pub(super) fn print(args: std::fmt::Arguments<'_>) {
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        closed_or_panic(e);
    }
}

/// Writes `args` and a line break to stdout.
pub(super) fn println(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        closed_or_panic(e);
    }
}

/// A reader that left ends the command; any other failure is as std's `println!` has it.
fn closed_or_panic(e: std::io::Error) {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    panic!("failed printing to stdout: {e}");
}
