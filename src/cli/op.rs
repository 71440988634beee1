//! `cohort op log` and `cohort op undo`.
use std::process::ExitCode;

use cohort::store::Mode;

use super::{json, out, CliResult, Env};

#[derive(clap::Subcommand)]
pub enum OpCommand {
    /// Every command that moved a ref: who, when, command line, each ref before and after.
    Log {
        #[arg(short = 'n', long)]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Revert the refs to the state before the last operation (recorded as a new operation).
    /// The working tree is not touched: run `cohort status` / `checkout` afterwards.
    Undo,
}

pub fn run(env: &Env, c: OpCommand) -> CliResult {
    match c {
        OpCommand::Log { limit, json: as_json } => {
            let repo = env.repo(Mode::Read)?;
            let log = repo.op_log(limit)?;
            if as_json {
                json(&log);
            } else {
                let mut s = String::new();
                for o in &log {
                    s.push_str(&format!("{} {} {} [{}]\n    {}\n", o.id.short(), o.time, o.user, o.head, o.description));
                    for c in &o.changes {
                        let short = |v: &Option<String>| match v {
                            Some(x) if x.len() == 64 => x[..12].to_string(),
                            Some(x) => x.clone(),
                            None => "(none)".into(),
                        };
                        s.push_str(&format!("    {} {}: {} -> {}\n", c.kind, c.name, short(&c.before), short(&c.after)));
                    }
                    if !o.command.is_empty() {
                        s.push_str(&format!("    $ {}\n", o.command.join(" ")));
                    }
                }
                out(&s);
            }
        }
        OpCommand::Undo => {
            let repo = env.repo(Mode::Write)?;
            let o = repo.op_undo()?;
            eprintln!("{}: HEAD {}", o.description, o.head);
        }
    }
    Ok(ExitCode::SUCCESS)
}
