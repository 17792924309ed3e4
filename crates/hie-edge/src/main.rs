//! The `hie-edge` binary: all logic lives in the library so end-to-end tests run the same code.
fn main() -> std::process::ExitCode {
    hie_edge::main_with_args(std::env::args_os())
}
