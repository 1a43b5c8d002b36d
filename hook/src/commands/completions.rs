//! `checkdef completions SHELL` and `checkdef man`: a shell completion script (clap_complete)
//! and the man page in roff (clap_mangen), both generated from the clap definitions in
//! [`crate::cli`] and printed on stdout.
//!
//! ```sh
//! checkdef completions bash > ~/.local/share/bash-completion/completions/checkdef
//! checkdef completions zsh  > ~/.zfunc/_checkdef
//! checkdef completions fish > ~/.config/fish/completions/checkdef.fish
//! checkdef man > ~/.local/share/man/man1/checkdef.1
//! ```
use anyhow::Result;
use clap::CommandFactory as _;

use crate::cli::Cli;
use crate::context::Context;
use crate::exit::Code;

/// The completion script for `shell`.
pub fn completion_script(shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "checkdef", &mut buf);
    buf
}

pub fn completions(ctx: &Context, shell: clap_complete::Shell) -> Result<Code> {
    print(ctx, &completion_script(shell))
}

/// Write to stdout; a closed pipe (`checkdef man | head`) is not an error.
fn print(ctx: &Context, bytes: &[u8]) -> Result<Code> {
    match ctx.printer.stdout(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(Code::Success),
    }
}

/// The man page of `checkdef` (section 1), roff.
pub fn man_page() -> Result<Vec<u8>> {
    let cmd = Cli::command();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut buf)?;
    Ok(buf)
}

pub fn man(ctx: &Context) -> Result<Code> {
    print(ctx, &man_page()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_page_names_the_subcommands() {
        let page = String::from_utf8(man_page().unwrap()).unwrap();
        assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
        for sub in ["init", "explain", "status", "completions"] {
            assert!(page.contains(sub), "{sub} missing");
        }
    }

    #[test]
    fn bash_completion_mentions_flags() {
        let text = String::from_utf8(completion_script(clap_complete::Shell::Bash)).unwrap();
        assert!(text.contains("--junit") && text.contains("init"), "{text}");
    }
}
