//! Shell completions and manual pages, generated from the command line's own definition
//! (so they can never disagree with `--help`): `incentive-ledger completions SHELL` and
//! `incentive-ledger man --out DIR` (one page per command, `incentive-ledger.1` and
//! `incentive-ledger-<command>.1`).

use anyhow::{Context, Result};
use clap::{Args, CommandFactory};
use std::path::PathBuf;

#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args)]
pub struct ManArgs {
    /// Directory for the pages (created if missing); without it the main page goes to
    /// stdout.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn completions(args: CompletionsArgs) -> Result<()> {
    let mut command = crate::Cli::command();
    clap_complete::generate(
        args.shell,
        &mut command,
        "incentive-ledger",
        &mut std::io::stdout(),
    );
    Ok(())
}

pub fn man(args: ManArgs) -> Result<()> {
    let command = crate::Cli::command();
    let Some(dir) = args.out else {
        clap_mangen::Man::new(command)
            .render(&mut std::io::stdout())
            .context("cannot write the manual page")?;
        return Ok(());
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = 0;
    let mut pages = vec![(String::from("incentive-ledger"), command.clone())];
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages.push((format!("incentive-ledger-{}", sub.get_name()), sub.clone()));
        for subsub in sub.get_subcommands() {
            pages.push((
                format!("incentive-ledger-{}-{}", sub.get_name(), subsub.get_name()),
                subsub.clone(),
            ));
        }
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(page.name(name.clone()))
            .render(&mut out)
            .context("cannot render a manual page")?;
        std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
        written += 1;
    }
    eprintln!("{written} manual pages written to {}", dir.display());
    Ok(())
}
