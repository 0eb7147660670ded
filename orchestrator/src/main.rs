//! `augur`: the command line. A thin shell over the `augur` library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
