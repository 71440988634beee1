//! `.cohortignore`: paths of the working tree that commits leave out (a viewer's thumbnails,
//! `.DS_Store`, a tool's scratch folder), written as in `.gitignore`.
//!
//! One file, at the root of the working folder; its lines are patterns, the last one that
//! matches a path decides:
//! - blank lines and lines starting with `#` say nothing; `\#` and `\!` start a pattern with
//!   those characters; trailing spaces are dropped unless escaped with `\`;
//! - `!` before a pattern takes a path back in;
//! - a pattern ending in `/` matches folders only;
//! - a pattern with a `/` at its start or in its middle is anchored at the root; one without
//!   matches a name at any depth;
//! - `*` and `?` stay within one name, `**` spans folders, `[...]` is a class.
//!
//! As in git, a folder left out is not looked into, so nothing inside it can be taken back in,
//! and a file committed before it was ignored is, from then on, removed from what is
//! committed (the working tree keeps it).
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// The name of the ignore file, at the root of the working folder.
pub const IGNORE_FILE: &str = ".cohortignore";

#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: line {line}: pattern {pattern:?}: {reason}")]
    BadPattern { path: PathBuf, line: usize, pattern: String, reason: String },
}

/// The rules of an ignore file.
#[derive(Debug, Default)]
pub struct Ignore {
    set: Option<GlobSet>,
    /// Per rule, in the file's order: (takes a path back in, matches folders only).
    rules: Vec<(bool, bool)>,
}

impl Ignore {
    /// The rules of `root`'s ignore file; none when there is no such file.
    pub fn load(root: &Path) -> Result<Ignore, IgnoreError> {
        let path = root.join(IGNORE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Ignore::parse(&String::from_utf8_lossy(&bytes), &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ignore::default()),
            Err(source) => Err(IgnoreError::Read { path, source }),
        }
    }

    /// Parse the text of an ignore file (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Ignore, IgnoreError> {
        let mut b = GlobSetBuilder::new();
        let mut rules = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let Some((glob, negate, dir_only)) = pattern(raw) else { continue };
            let bad = |reason: String| IgnoreError::BadPattern { path: path.to_path_buf(), line: i + 1, pattern: raw.to_string(), reason };
            let g = GlobBuilder::new(&glob).literal_separator(true).backslash_escape(true).build().map_err(|e| bad(e.kind().to_string()))?;
            b.add(g);
            rules.push((negate, dir_only));
        }
        if rules.is_empty() {
            return Ok(Ignore::default());
        }
        let set = b.build().map_err(|e| IgnoreError::BadPattern { path: path.to_path_buf(), line: 0, pattern: String::new(), reason: e.to_string() })?;
        Ok(Ignore { set: Some(set), rules })
    }

    /// Whether there are no rules (nothing is ever ignored).
    pub fn is_empty(&self) -> bool {
        self.set.is_none()
    }

    /// Whether the path `rel` (relative to the root, `/`-separated; a folder if `is_dir`) is
    /// left out. Its folders are not looked at: the walk does not enter an ignored folder.
    pub fn ignored(&self, rel: &str, is_dir: bool) -> bool {
        let Some(set) = &self.set else { return false };
        let mut verdict = false;
        // Matches come in rule order; the last that applies decides.
        for i in set.matches(rel) {
            let (negate, dir_only) = self.rules[i];
            if dir_only && !is_dir {
                continue;
            }
            verdict = !negate;
        }
        verdict
    }
}

/// A line of an ignore file as a glob over paths from the root: (glob, negated, folders
/// only); None for blank lines and comments.
fn pattern(line: &str) -> Option<(String, bool, bool)> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    // Trailing spaces go, unless the last one is escaped.
    let mut end = line.len();
    while end > 0 && line.as_bytes()[end - 1] == b' ' && !(end >= 2 && line.as_bytes()[end - 2] == b'\\') {
        end -= 1;
    }
    let mut p = &line[..end];
    if p.is_empty() || p.starts_with('#') {
        return None;
    }
    let negate = p.starts_with('!');
    // `!` negates; `\!` and `\#` stand for the character itself.
    if negate || p.starts_with("\\!") || p.starts_with("\\#") {
        p = &p[1..];
    }
    let dir_only = p.ends_with('/');
    let p = p.trim_end_matches('/');
    if p.is_empty() {
        return None;
    }
    let anchored = p.contains('/');
    let p = p.trim_start_matches('/');
    Some((if anchored { p.to_string() } else { format!("**/{p}") }, negate, dir_only))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ig(text: &str) -> Ignore {
        Ignore::parse(text, Path::new(IGNORE_FILE)).unwrap()
    }

    #[test]
    fn gitignore_rules() {
        let i = ig("# viewers\n.DS_Store\n*.tmp\n!keep.tmp\n/scratch/\nbuild/\ndocs/*.pdf\n**/cache/**\n\\#hash\n\\!bang\ntrailing   \nesc\\ \n\n");
        assert!(i.ignored(".DS_Store", false) && i.ignored("P1/s/.DS_Store", false));
        assert!(i.ignored("a.tmp", false) && i.ignored("P1/b.tmp", false));
        assert!(!i.ignored("keep.tmp", false) && !i.ignored("P1/keep.tmp", false), "taken back in");
        assert!(i.ignored("scratch", true) && !i.ignored("scratch", false), "folders only");
        assert!(!i.ignored("P1/scratch", true), "anchored at the root");
        assert!(i.ignored("build", true) && i.ignored("P1/build", true) && !i.ignored("build", false));
        assert!(i.ignored("docs/a.pdf", false) && !i.ignored("docs/x/a.pdf", false) && !i.ignored("P/docs/a.pdf", false), "* stays in one name");
        assert!(i.ignored("P1/cache/x", false) && i.ignored("cache/a/b", false));
        assert!(i.ignored("#hash", false) && i.ignored("!bang", false));
        assert!(i.ignored("trailing", false) && i.ignored("esc ", false));
        assert!(!i.ignored("P1/s/IM0.dcm", false) && !i.ignored("P1", true));
        assert!(ig("").is_empty() && ig("# only a comment\n\n").is_empty());
        // The last rule that matches decides.
        let j = ig("!a.dcm\n*.dcm\n");
        assert!(j.ignored("a.dcm", false));
    }

    #[test]
    fn a_bad_pattern_names_the_file_and_line() {
        let e = Ignore::parse("ok\n[z-a\n", Path::new("/ds/.cohortignore")).unwrap_err().to_string();
        assert!(e.starts_with("/ds/.cohortignore: line 2: pattern \"[z-a\""), "{e}");
    }
}
