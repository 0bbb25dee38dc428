//! Worker passwords: read from the config or a file, and generated for the embedded default
//! worker on first start (so `switchyard start` needs no setup and still has no well-known
//! password). A generated password is written to `<data_dir>/workers/<name>.password` with
//! mode 0600, where `switchyard worker` finds it.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::MasterConfig;

/// Why a worker password could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{worker:?}: cannot read {path}: {source}")]
    Read {
        worker: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{worker:?}: {path} is empty")]
    Empty { worker: String, path: PathBuf },
    #[error("{worker:?}: cannot write a generated secret to {path}: {source}")]
    Write {
        worker: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `(name, password)` for every configured worker. A relative `password_file` is taken
/// from `data_dir`; a missing one is generated when `generate_missing` (the embedded
/// default), else an error.
pub fn worker_passwords(
    config: &MasterConfig,
    generate_missing: bool,
) -> Result<Vec<(String, String)>, SecretError> {
    let mut out = Vec::new();
    for w in &config.workers {
        let password = match (&w.password, &w.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(file)) => {
                let path = if file.is_absolute() {
                    file.clone()
                } else {
                    config.data_dir.join(file)
                };
                read_or_generate(&w.name, &path, generate_missing)?
            }
            (None, None) => unreachable!("validated: every worker has a password"),
        };
        out.push((w.name.clone(), password));
    }
    Ok(out)
}

/// Loads `[master.api] token_file` into the token list (generating it when
/// `generate_missing`), so the API sees one list of tokens.
pub fn load_api_token(
    config: &mut MasterConfig,
    generate_missing: bool,
) -> Result<(), SecretError> {
    if let Some(file) = config.api.token_file.clone() {
        let path = if file.is_absolute() {
            file
        } else {
            config.data_dir.join(file)
        };
        let token = read_or_generate("api", &path, generate_missing)?;
        config.api.tokens.push(token);
    }
    Ok(())
}

fn read_or_generate(worker: &str, path: &Path, generate: bool) -> Result<String, SecretError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let p = text.lines().next().unwrap_or("").trim().to_owned();
            if p.is_empty() {
                Err(SecretError::Empty {
                    worker: worker.into(),
                    path: path.into(),
                })
            } else {
                Ok(p)
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && generate => {
            let password = generate_password();
            write_secret(path, &password).map_err(|source| SecretError::Write {
                worker: worker.into(),
                path: path.into(),
                source,
            })?;
            tracing::info!(for_ = worker, path = %path.display(), "generated a secret");
            Ok(password)
        }
        Err(source) => Err(SecretError::Read {
            worker: worker.into(),
            path: path.into(),
            source,
        }),
    }
}

fn generate_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{secret}")
}
