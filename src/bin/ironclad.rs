//! The ironclad host CLI. All work is in the library; see [`ironclad::cli`].

fn main() -> std::process::ExitCode {
    ironclad::cli::main()
}
