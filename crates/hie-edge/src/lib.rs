//! hie-edge, the binary's library: command line, configuration and wiring. The `hie-edge`
//! binary is a one-line `main` over [`main_with_args`], so end-to-end tests run this same code.
//!
//! Modules:
//! - [`cli`]: subcommands (`serve`, `check-config`, `kos build`, `study refresh`, `publish`,
//!   `backfill`, `pki init`) and exit codes; `backfill` follows its studies with a progress bar.
//! - [`pacs`]: the configured PACS adapter behind the broker's port.
//! - [`config`]: the TOML file and `HIE_EDGE__*` overrides, validated in two phases.
//! - [`app`]: `App::start` builds the store, the writer, the workers and the listeners.

pub mod app;
mod backfill;
pub mod cli;
pub mod config;
pub mod pacs;

pub use cli::main_with_args;
