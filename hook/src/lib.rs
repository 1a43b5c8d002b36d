//! checkdef: skip tests that already passed on the same inputs.
//!
//! Layers (see `docs/architecture.md`): `config` (checkdef.toml) → `git` (trees, blobs, work tree via
//! gix) → `manifest` (canonical input listing and hash) → `plan` (per-segment keys and cache status)
//! → `run` (materialise, execute, store, push) → `prepush` (the hook). Only this crate prints,
//! and only through [`printer`] (the lints below enforce it; the hidden re-exec stages, which
//! run before any printer exists, are the narrow exceptions).
#![warn(clippy::print_stdout, clippy::print_stderr)]

mod background;
pub mod cache;
pub mod cli;
mod commands;
pub mod config;
pub mod context;
mod duration;
mod exit;
mod fsutil;
pub mod git;
pub mod init;
mod junit;
mod listing;
pub mod manifest;
pub mod plan;
pub mod prepush;
mod printer;
mod process;
mod pyenv;
mod report;
pub mod result;
pub mod run;
mod signals;

pub use manifest::input_hash as manifest_hash;

use std::process::ExitCode;

/// Entry point used by `main.rs`: parse arguments, dispatch, map errors to the documented exit codes.
pub fn main() -> ExitCode {
    // The supervisor stage of every check (see `run::supervise`): dispatched before clap and
    // before any runtime starts, so it stays single-threaded and small.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == run::supervise::SUBCOMMAND) {
        return run::supervise::main(&args[2..]);
    }
    if args.get(1).is_some_and(|a| a == run::supervise::GUARD) {
        return run::supervise::guard_main(&args[2..]);
    }
    // The sandbox entry runs before anything else (no runtime, no threads): see run/isolate.rs.
    if args.get(1).is_some_and(|a| a == run::isolate::ENTRY) {
        run::isolate::entry_main(&args[2..]);
    }
    let cli = <cli::Cli as clap::Parser>::parse();
    let ctx = context::Context::new(&cli.globals, cli.config.clone());
    match commands::dispatch(&ctx, cli) {
        Ok(code) => code.into(),
        Err(err) => {
            ctx.printer.error(&err);
            exit::Code::from_error(&err).into()
        }
    }
}
