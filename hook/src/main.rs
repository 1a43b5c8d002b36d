//! The `checkdef` binary: all logic lives in the library so tests can drive it.
fn main() -> std::process::ExitCode {
    checkdef::main()
}
