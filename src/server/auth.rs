//! The admin token: loaded from config/env, or generated once into `<dir>/admin.token`.
//! The token never goes to tracing, INFO or CLIENT LIST; comparisons take constant time.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand::distributions::Alphanumeric;
use rand::Rng;

/// The secret clients present with AUTH.
#[derive(Clone)]
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret, even in debug output.
        f.write_str("Token(<redacted>)")
    }
}

/// Where the token came from, so start-up can say the right thing.
#[derive(Debug)]
pub enum TokenSource {
    /// From the config file, `--token` or `SNDV_KV_TOKEN`.
    Configured,
    /// Read from an existing token file.
    File(PathBuf),
    /// Newly generated and written to this file: print it once.
    Generated(PathBuf),
}

pub const TOKEN_FILE: &str = "admin.token";

impl Token {
    pub fn new(secret: impl Into<Vec<u8>>) -> Token {
        Token(secret.into())
    }

    /// Constant-time comparison: the time taken depends only on the lengths.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let a = &self.0;
        let mut diff = u8::from(a.len() != candidate.len());
        // Walk the stored token's length whatever the candidate is, so the loop count leaks
        // nothing about the candidate's prefix.
        for (i, &x) in a.iter().enumerate() {
            let y = candidate.get(i).copied().unwrap_or(0);
            diff |= x ^ y;
        }
        std::hint::black_box(diff) == 0
    }

    /// Reveals the secret (only for the one start-up line that prints a new token).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

/// Returns the configured token, or the one in `<dir>/admin.token`, or a new one written there.
pub fn load_or_generate(
    configured: Option<&str>,
    dir: &Path,
) -> std::io::Result<(Token, TokenSource)> {
    if let Some(t) = configured {
        return Ok((Token::new(t.as_bytes().to_vec()), TokenSource::Configured));
    }
    let path = dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let t = text.trim();
            if t.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} is empty; delete it to generate a new token",
                        path.display()
                    ),
                ));
            }
            Ok((Token::new(t.as_bytes().to_vec()), TokenSource::File(path)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            let secret: String = rand::thread_rng()
                .sample_iter(&Alphanumeric)
                .take(40)
                .map(char::from)
                .collect();
            write_private(&path, secret.as_bytes())?;
            Ok((
                Token::new(secret.into_bytes()),
                TokenSource::Generated(path),
            ))
        }
        Err(e) => Err(e),
    }
}

/// Writes a file readable only by its owner, synced, created exclusively so two starts never
/// race to different tokens.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(data)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    if let Some(parent) = path.parent() {
        // Make the new directory entry durable too.
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare() {
        let t = Token::new(b"secret".to_vec());
        assert!(t.matches(b"secret"));
        assert!(!t.matches(b"secreT"));
        assert!(!t.matches(b"secret2"));
        assert!(!t.matches(b"secre"));
        assert!(!t.matches(b""));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
    }

    #[test]
    fn generate_then_reuse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (t1, s1) = load_or_generate(None, dir.path()).expect("gen");
        assert!(matches!(s1, TokenSource::Generated(_)));
        assert!(t1.expose().len() >= 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (t2, s2) = load_or_generate(None, dir.path()).expect("reuse");
        assert!(matches!(s2, TokenSource::File(_)));
        assert_eq!(t1.expose(), t2.expose());
        let (t3, s3) = load_or_generate(Some("x"), dir.path()).expect("configured");
        assert!(matches!(s3, TokenSource::Configured));
        assert!(t3.matches(b"x"));
    }
}
