//! `cohort verify` and `cohort keygen`.
use std::path::PathBuf;
use std::process::ExitCode;

use cohort::store::Mode;

use super::{abs, json, out, CliResult, Env};

/// Recompute every id from the content, from REV down to the root commit, and check every
/// commit signature; exit status 1 if anything does not match.
#[derive(clap::Args)]
pub struct VerifyArgs {
    #[arg(default_value = "HEAD")]
    rev: String,
    #[arg(long)]
    json: bool,
}

pub fn run_verify(env: &Env, a: VerifyArgs) -> CliResult {
    let repo = env.repo(Mode::Read)?;
    let r = cohort::verify::verify(&repo, &a.rev, &env.progress())?;
    if a.json {
        json(&r);
    } else {
        let mut s = String::new();
        for p in &r.problems {
            s.push_str(&format!("BAD {} ({}): {}\n", p.id, p.place, p.problem));
        }
        for g in &r.signed {
            let state = if g.valid { "good signature".to_string() } else { format!("BAD signature: {}", g.problem.as_deref().unwrap_or("")) };
            s.push_str(&format!("commit {}: {state} by {} (key {})\n", g.commit.short(), g.signer, g.key_fingerprint));
        }
        s.push_str(&format!(
            "{}: {} commits, {} objects ({} bytes) re-hashed; {} signed, {} unsigned: {}\n",
            r.commit.short(),
            r.commits,
            r.objects,
            r.bytes,
            r.signed.len(),
            r.unsigned,
            if r.ok { "history intact" } else { "HISTORY DOES NOT VERIFY" }
        ));
        out(&s);
    }
    Ok(if r.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Make an ed25519 signing key file for `commit --sign` (mode 0600; never overwritten).
#[derive(clap::Args)]
pub struct KeygenArgs {
    out: PathBuf,
    /// The signer's name, shown by `verify`.
    #[arg(long)]
    signer: String,
}

pub fn run_keygen(env: &Env, a: KeygenArgs) -> CliResult {
    let key = cohort::sign::SigningKey::generate(&a.signer)?;
    key.save(&abs(env, &a.out))?;
    out(&format!("{}\n", hex::encode(key.public_key())));
    eprintln!("wrote {} for {} (key {}); keep it secret", a.out.display(), a.signer, key.fingerprint());
    Ok(ExitCode::SUCCESS)
}
