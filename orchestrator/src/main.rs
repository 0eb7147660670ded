//! `augur`: the command line. A thin shell over the `augur` library.

fn main() -> std::process::ExitCode {
    // `augur trials x | head`: a closed pipe ends the process quietly, as it does
    // other Unix tools, instead of a panic on the next print.
    // SAFETY: restoring a signal's default disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    augur::cli::main()
}
