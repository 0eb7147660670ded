//! `augur`: the command line. A thin shell over the `augur` library.

fn main() -> std::process::ExitCode {
    augur::cli::main()
}
