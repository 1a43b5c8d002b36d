//! One module per subcommand.
pub mod install;
pub mod uninstall;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::context::Context;
use crate::exit::Code;

pub mod cache;
pub mod completions;
pub mod explain;
pub mod hook;
pub mod init;
pub mod keygen;
pub mod plan;
pub mod run;
pub mod status;
pub mod warm;

/// The engine's options for a run of `config`'s checks in `ctx`, as every command starts
/// them: the default job count, results pushed, no budget; callers change what differs.
fn run_options(ctx: &Context, config: &crate::config::Config) -> crate::run::RunOptions {
    crate::run::RunOptions {
        jobs: ctx.settings.default_jobs(),
        push: true,
        hit_logs: false,
        redact_env: config.redact_env.clone(),
        force: false,
        env: ctx.env().clone(),
        sandbox: ctx.settings.sandbox.clone(),
        supervisor: crate::run::exec::SELF_EXE.into(),
        deadline: None,
        warn_if_slow: false,
    }
}

/// Run the command `cli` names in `ctx` (made from the same command line).
pub fn dispatch(ctx: &Context, cli: Cli) -> Result<Code> {
    if let Some(dir) = &cli.directory {
        std::env::set_current_dir(dir)
            .map_err(|e| crate::exit::usage(format!("cannot enter {}: {e}", dir.display())))?;
    }
    // How the background runs that ended since the last command ended (a failed deferred
    // check loudly); not from the background stage itself, nor for completions and the man page.
    if !matches!(
        cli.command,
        Command::Background(_) | Command::Completions(_) | Command::Man
    ) {
        warm::report_ended(ctx);
    }
    // Commands that start processes (fingerprint queries, checks, warm servers) stop on
    // Ctrl-C/SIGTERM at any moment with nothing stored, and leave nothing running: see
    // crate::signals and crate::process::adopt_orphans.
    let starts_processes = matches!(
        cli.command,
        Command::Run(_)
            | Command::Background(_)
            | Command::Hook(_)
            | Command::Plan(_)
            | Command::Explain(_)
            | Command::Status
    );
    if starts_processes {
        let _ = crate::signals::install();
        crate::process::adopt_orphans();
    }
    let result = run_command(ctx, cli.command);
    if starts_processes {
        crate::process::sweep_orphans();
        if crate::signals::received().is_some() {
            return match result {
                // Whatever the command made of it: interrupted, nothing partial stored.
                Ok(_) => Ok(Code::Interrupted),
                Err(e) if Code::from_error(&e) == Code::Interrupted => Err(e),
                Err(_) => Err(crate::exit::interrupted()),
            };
        }
    }
    result
}

fn run_command(ctx: &Context, command: Command) -> Result<Code> {
    match command {
        Command::Warm(args) => warm::warm(ctx, &args),
        Command::Background(args) => warm::background_main(ctx, &args),
        Command::Install(args) => install::run(ctx, &args),
        Command::Uninstall(args) => uninstall::run(ctx, args.force, args.global),
        Command::Plan(args) => plan::run(ctx, &args),
        Command::Explain(args) => explain::run(ctx, &args),
        Command::Run(args) => run::run(ctx, &args),
        Command::Keygen(args) => keygen::run(ctx, &args),
        Command::Cache(cmd) => cache::run(ctx, &cmd),
        Command::Hook(crate::cli::HookCommand::PrePush { remote, url }) => {
            hook::pre_push(ctx, &remote, &url)
        }
        Command::Init(args) => init::run(ctx, &args),
        Command::Status => status::run(ctx),
        Command::Completions(args) => completions::completions(ctx, args.shell),
        Command::Man => completions::man(ctx),
    }
}
