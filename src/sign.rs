//! ed25519 signatures of commits, and the key file that holds a signer's secret.
//!
//! A signature covers the id of the commit as it would be without its signature: the commit
//! is encoded with `signature = None`, hashed, and `"cohort commit signature v1\0" || id` is
//! signed. The signed commit's own id then covers the signature too, so neither can change
//! without the other.
//!
//! Key file (text, mode 0600):
//! ```text
//! cohort-signing-key 1
//! signer: Dr. A. Curator
//! secret: <64 hex digits: the ed25519 seed>
//! ```

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, Verifier};

use crate::id::ObjectId;
use crate::object::{Commit, CommitSignature, Structured};

const CONTEXT: &[u8] = b"cohort commit signature v1\0";
const KEY_MAGIC: &str = "cohort-signing-key 1";

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a cohort signing key: {reason}")]
    BadKeyFile { path: PathBuf, reason: String },
    #[error("{path} exists; refusing to overwrite a key")]
    Exists { path: PathBuf },
    #[error("invalid signer name {0:?}: one line, 1 to 200 characters")]
    BadSigner(String),
}

/// A signer's secret key and name.
#[derive(Clone)]
pub struct SigningKey {
    pub signer: String,
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, {})", self.signer, self.fingerprint())
    }
}

/// Short, stable name of a public key: the first 16 hex digits of its BLAKE3.
pub fn key_fingerprint(public_key: &[u8]) -> String {
    ObjectId::of(public_key).hex()[..16].to_string()
}

impl SigningKey {
    /// A new random key (from the operating system's generator).
    pub fn generate(signer: &str) -> Result<SigningKey, SignError> {
        check_signer(signer)?;
        let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
        Ok(SigningKey { signer: signer.into(), key })
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    pub fn fingerprint(&self) -> String {
        key_fingerprint(&self.public_key())
    }

    /// Write the key file (created new, mode 0600).
    pub fn save(&self, path: &Path) -> Result<(), SignError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                SignError::Exists { path: path.into() }
            } else {
                SignError::Io { path: path.into(), source }
            }
        })?;
        let text = format!("{KEY_MAGIC}\nsigner: {}\nsecret: {}\n", self.signer, hex::encode(self.key.to_bytes()));
        f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(|source| SignError::Io { path: path.into(), source })
    }

    pub fn load(path: &Path) -> Result<SigningKey, SignError> {
        let text = std::fs::read_to_string(path).map_err(|source| SignError::Io { path: path.into(), source })?;
        let bad = |reason: &str| SignError::BadKeyFile { path: path.into(), reason: reason.into() };
        let mut lines = text.lines();
        if lines.next() != Some(KEY_MAGIC) {
            return Err(bad(&format!("the first line must be {KEY_MAGIC:?}")));
        }
        let (mut signer, mut secret) = (None, None);
        for l in lines {
            if let Some(v) = l.strip_prefix("signer: ") {
                signer = Some(v.to_string());
            } else if let Some(v) = l.strip_prefix("secret: ") {
                secret = Some(v.trim().to_string());
            }
        }
        let signer = signer.ok_or_else(|| bad("no 'signer:' line"))?;
        check_signer(&signer).map_err(|_| bad("bad signer name"))?;
        let secret = secret.ok_or_else(|| bad("no 'secret:' line"))?;
        let bytes: [u8; 32] = hex::decode(&secret).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| bad("the secret must be 64 hex digits"))?;
        Ok(SigningKey { signer, key: ed25519_dalek::SigningKey::from_bytes(&bytes) })
    }
}

fn check_signer(s: &str) -> Result<(), SignError> {
    if s.trim().is_empty() || s.len() > 200 || s.contains(['\n', '\r']) {
        return Err(SignError::BadSigner(s.into()));
    }
    Ok(())
}

/// The id a signature covers: the commit encoded without its signature.
pub fn unsigned_id(c: &Commit) -> ObjectId {
    Commit { signature: None, ..c.clone() }.id()
}

fn message(id: &ObjectId) -> Vec<u8> {
    let mut m = CONTEXT.to_vec();
    m.extend_from_slice(&id.0);
    m
}

/// The commit with its signature set.
pub fn sign_commit(c: Commit, key: &SigningKey) -> Commit {
    let id = unsigned_id(&c);
    let sig = key.key.sign(&message(&id));
    Commit {
        signature: Some(CommitSignature { signer: key.signer.clone(), public_key: key.public_key().to_vec(), signature: sig.to_bytes().to_vec() }),
        ..c
    }
}

/// Whether a commit's signature is valid (None when it is not signed).
pub fn check_signature(c: &Commit) -> Option<Result<(), String>> {
    let s = c.signature.as_ref()?;
    Some((|| {
        let pk: [u8; 32] = s.public_key.as_slice().try_into().map_err(|_| format!("public key has {} bytes, not 32", s.public_key.len()))?;
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&pk).map_err(|e| format!("bad public key: {e}"))?;
        let sig: [u8; 64] = s.signature.as_slice().try_into().map_err(|_| format!("signature has {} bytes, not 64", s.signature.len()))?;
        vk.verify(&message(&unsigned_id(c)), &ed25519_dalek::Signature::from_bytes(&sig)).map_err(|_| "signature does not match the commit".to_string())
    })())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::{Activity, Agent};

    fn commit() -> Commit {
        Commit {
            tree: ObjectId::of(b"tree"),
            parents: vec![],
            author: "a".into(),
            time_us: 1,
            message: "m".into(),
            activity: Activity {
                kind: "commit".into(),
                agent: Agent { user: "a".into(), tool: "cohort".into(), tool_version: "0".into() },
                parameters: Default::default(),
                inputs: vec![],
                outputs: vec![],
                started_us: 1,
                ended_us: 1,
            },
            notes: vec![],
            catalog: None,
            signature: None,
        }
    }

    #[test]
    fn signatures_bind_the_content_and_the_key() {
        let key = SigningKey::generate("Dr Curator").unwrap();
        let signed = sign_commit(commit(), &key);
        assert_eq!(check_signature(&signed), Some(Ok(())));
        assert_eq!(check_signature(&commit()), None);
        // Any change of content invalidates the signature.
        let mut changed = signed.clone();
        changed.message = "other".into();
        assert!(check_signature(&changed).unwrap().is_err());
        // So does another key claiming the same signer.
        let other = SigningKey::generate("Dr Curator").unwrap();
        let mut forged = signed.clone();
        forged.signature.as_mut().unwrap().public_key = other.public_key().to_vec();
        assert!(check_signature(&forged).unwrap().is_err());
        // Truncated signature bytes are an error, not a panic.
        let mut short = signed;
        short.signature.as_mut().unwrap().signature.truncate(10);
        assert!(check_signature(&short).unwrap().is_err());
    }

    #[test]
    fn key_files_round_trip_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let key = SigningKey::generate("A. Reader").unwrap();
        key.save(&p).unwrap();
        assert!(matches!(key.save(&p), Err(SignError::Exists { .. })));
        let back = SigningKey::load(&p).unwrap();
        assert_eq!(back.public_key(), key.public_key());
        assert_eq!(back.signer, "A. Reader");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        for bad in ["", "cohort-signing-key 1\nsigner: x\n", "cohort-signing-key 1\nsigner: x\nsecret: 12\n", "other\n"] {
            std::fs::write(dir.path().join("b"), bad).unwrap();
            let e = SigningKey::load(&dir.path().join("b")).unwrap_err().to_string();
            assert!(e.contains("not a cohort signing key"), "{e}");
        }
    }
}
