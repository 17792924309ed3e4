//! The broker as the end-to-end tests start it: the very same entry point as the `hie-edge` binary,
//! built inside this package so integration tests can find it through `CARGO_BIN_EXE_hie-edge-e2e`.

fn main() -> std::process::ExitCode {
    hie_edge::main_with_args(std::env::args_os())
}
