//! `cohort verify`, `cohort verify-export` and `cohort keygen`.
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

/// Check that an export folder is still exactly what cohort wrote: every file there, byte
/// for byte, and nothing more. A training export (with cohort-manifest.json) is checked
/// against its manifest, with no store needed; a plain export against REV, the revision it
/// was exported from. Exit status 1 if anything differs.
#[derive(clap::Args)]
pub struct VerifyExportArgs {
    /// The export folder.
    folder: PathBuf,
    /// The revision it was exported from: needed for a plain export (no manifest); for a
    /// training export, checked against the manifest's commit.
    rev: Option<String>,
    #[arg(long)]
    json: bool,
}

pub fn run_verify_export(env: &Env, a: VerifyExportArgs) -> CliResult {
    use cohort::exportcheck;
    let dir = abs(env, &a.folder);
    let c = match (exportcheck::read_manifest(&dir)?, &a.rev) {
        (Some(m), None) => exportcheck::check_manifest(&dir, m, &env.progress())?,
        (None, None) => {
            return Err(super::CliError {
                message: format!("{}: no {} here (a plain export): name the revision it was exported from, `cohort verify-export DIR REV`", a.folder.display(), cohort::mlexport::MANIFEST),
                code: 2,
            })
        }
        (m, Some(rev)) => {
            let repo = env.repo(Mode::Read)?;
            let id = repo.resolve(rev)?;
            match m {
                Some(m) if m.commit != id => {
                    return Err(super::CliError { message: format!("{} was exported from commit {}, not from {rev} ({})", a.folder.display(), m.commit.short(), id.short()), code: 1 });
                }
                Some(m) => exportcheck::check_manifest(&dir, m, &env.progress())?,
                None => exportcheck::check_tree(&dir, &repo.store, id, &env.progress())?,
            }
        }
    };
    if a.json {
        json(&c);
    } else {
        let mut s = String::new();
        for f in &c.changed {
            s.push_str(&format!("M {}: {}\n", f.path, f.problem));
        }
        for p in &c.missing {
            s.push_str(&format!("D {p}: missing\n"));
        }
        for p in &c.extra {
            s.push_str(&format!("A {p}: not written by the export\n"));
        }
        let what = match (&c.split, &c.export_format) {
            (Some(split), Some(f)) => format!(" (split {split}{}, {f})", c.part.as_ref().map(|p| format!(", part {p}")).unwrap_or_default()),
            _ => String::new(),
        };
        if c.clean {
            s.push_str(&format!("{}: all {} files as exported from commit {}{what}\n", a.folder.display(), c.files, c.commit.short()));
        } else {
            s.push_str(&format!(
                "{}: NOT AS EXPORTED from commit {}{what}: {} of {} files changed, {} missing, {} extra\n",
                a.folder.display(),
                c.commit.short(),
                c.changed.len(),
                c.files,
                c.missing.len(),
                c.extra.len()
            ));
        }
        out(&s);
    }
    Ok(if c.clean { ExitCode::SUCCESS } else { ExitCode::from(1) })
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
