//! The `strongroom` binary. The server is not built yet (see the server
//! issue); the command exists so the README's run command is stable.

fn main() -> std::process::ExitCode {
    eprintln!(
        "strongroom: the server is not built yet. The workspace crates (seal-core, barrier, \
         storage-redb) are usable as libraries; see README.md."
    );
    std::process::ExitCode::from(2)
}
