//! `cohort run` and `cohort rerun`.
use std::path::PathBuf;
use std::process::ExitCode;

use cohort::run::RunRequest;
use cohort::store::Mode;

use super::{json, out, CliResult, Env};

/// Run your own script on the (clean) working tree and commit what it changed, recording the
/// command, exit status, inputs, outputs and the git commit of the code.
#[derive(clap::Args)]
pub struct RunArgs {
    #[arg(short, long)]
    message: Option<String>,
    /// A path the command reads (repeatable); recorded with its object id.
    #[arg(long = "input", value_name = "PATH")]
    inputs: Vec<String>,
    /// A path the command writes (repeatable); default: every path it changed.
    #[arg(long = "output", value_name = "PATH")]
    outputs: Vec<String>,
    /// The script file, when it is not the program or its first file argument.
    #[arg(long)]
    code: Option<PathBuf>,
    #[arg(long)]
    json: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn run_run(env: &Env, a: RunArgs) -> CliResult {
    let repo = env.repo(Mode::Write)?;
    let req = RunRequest { message: a.message, inputs: a.inputs, outputs: a.outputs, command: a.command, code: a.code };
    let s = cohort::run::run(&repo, &req, &env.progress())?;
    if a.json {
        json(&s);
        return Ok(ExitCode::SUCCESS);
    }
    out(&format!("{}\n", s.commit));
    eprintln!("run committed: {} output(s), exit status {}", s.outputs.len(), s.exit_status);
    if let Some(c) = &s.code {
        match (&c.repo, &c.commit) {
            (Some(r), Some(id)) => eprintln!("code: {} at git commit {}{} in {r}", c.script, &id[..12.min(id.len())], if c.dirty { " with uncommitted changes" } else { "" }),
            _ => eprintln!("code: {} (not in a git repository: its version is not recorded)", c.script),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Run a recorded `cohort run` again from its input state; report whether the outputs came
/// out identical (exit status 1 if not).
#[derive(clap::Args)]
pub struct RerunArgs {
    rev: String,
    #[arg(long)]
    json: bool,
}

pub fn run_rerun(env: &Env, a: RerunArgs) -> CliResult {
    let repo = env.repo(Mode::Read)?;
    let r = cohort::run::rerun(&repo, &a.rev, &env.progress())?;
    if a.json {
        json(&r);
    } else {
        let mut s = format!("reran {}: $ {}\n", r.commit.short(), r.command.join(" "));
        for o in &r.outputs {
            s.push_str(&format!("  {} {}\n", if o.identical { "same     " } else { "DIFFERENT" }, o.path));
        }
        if r.code_changed {
            s.push_str("  note: the code is not provably the recorded version (another git commit, or uncommitted changes)\n");
        }
        s.push_str(&format!(
            "exit status {} (recorded {}); whole tree {}; outputs {}\n",
            r.exit_status,
            r.recorded_exit_status.map(|x| x.to_string()).unwrap_or_else(|| "?".into()),
            if r.tree_identical { "identical" } else { "differs" },
            if r.identical { "IDENTICAL" } else { "NOT identical" }
        ));
        out(&s);
    }
    Ok(if r.identical { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
