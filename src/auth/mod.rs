//! Bearer tokens. HS256 with the server's secret: configured (`auth.jwt_secret`), or
//! generated on first start and kept in `<data_dir>/jwt-secret` so that `filesync token`
//! and the server agree without configuration.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::config::{Backend, Settings};
use crate::domain::UserId;

const SECRET_FILE: &str = "jwt-secret";

/// Why a request is not authenticated. The message is safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed Authorization header; expected \"Bearer <token>\"")]
    MalformedHeader,
    #[error("token has expired")]
    Expired,
    #[error("invalid token")]
    Invalid,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: i64,
    exp: i64,
}

#[derive(Clone)]
pub struct Authenticator {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Authenticator {
    pub fn new(secret: &[u8], leeway: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway.as_secs();
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_aud = false;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Mints a token for `user` valid for `ttl`.
    pub fn issue(&self, user: &UserId, ttl: Duration) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user.as_str().to_owned(),
            iat: now,
            exp: now + i64::try_from(ttl.as_secs()).context("ttl too long")?,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .context("cannot sign token")
    }

    pub fn verify(&self, token: &str) -> Result<UserId, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            })?;
        UserId::parse(&data.claims.sub).map_err(|_| AuthError::Invalid)
    }

    /// Verifies an `Authorization` header value.
    pub fn verify_header(&self, header: Option<&str>) -> Result<UserId, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let (scheme, token) = header
            .trim()
            .split_once(' ')
            .ok_or(AuthError::MalformedHeader)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::MalformedHeader);
        }
        self.verify(token.trim())
    }

    /// Verifies the payload of a websocket `connection_init`: `{"authorization": "Bearer
    /// <jwt>"}` (as a header value, the key in any case) or `{"token": "<jwt>"}`.
    pub fn verify_connection_init(
        &self,
        payload: Option<&serde_json::Value>,
    ) -> Result<UserId, AuthError> {
        let fields = payload
            .and_then(|p| p.as_object())
            .ok_or(AuthError::Missing)?;
        let field = |name: &str| {
            fields
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str().ok_or(AuthError::MalformedHeader))
        };
        match (field("authorization"), field("token")) {
            (Some(header), _) => self.verify_header(Some(header?)),
            (None, Some(token)) => self.verify(token?),
            (None, None) => Err(AuthError::Missing),
        }
    }
}

/// The server's secret: configured, or the data dir's (created on first use).
pub fn server_secret(settings: &Settings) -> anyhow::Result<Vec<u8>> {
    match &settings.auth.jwt_secret {
        Some(secret) => {
            anyhow::ensure!(
                secret.expose().len() >= 32,
                "auth.jwt_secret must be at least 32 bytes"
            );
            Ok(secret.expose().as_bytes().to_vec())
        }
        None if settings.storage.backend == Backend::Aws => anyhow::bail!(
            "auth.jwt_secret (FILESYNC_AUTH__JWT_SECRET) must be set with the aws backend: \
             every replica must accept the same tokens"
        ),
        None => load_or_create_secret(&settings.storage.data_dir),
    }
}

/// Reads `<data_dir>/jwt-secret`, creating it (mode 0600) if absent. Two processes
/// racing to create it end up with the same secret: the file is linked into place only
/// if no other process got there first.
pub fn load_or_create_secret(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = data_dir.join(SECRET_FILE);
    if let Ok(hex_secret) = std::fs::read_to_string(&path) {
        return hex::decode(hex_secret.trim())
            .with_context(|| format!("{} is corrupt", path.display()));
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let mut secret = vec![0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let tmp = data_dir.join(format!(".{SECRET_FILE}.{}", uuid::Uuid::new_v4()));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        file.write_all(hex::encode(&secret).as_bytes())?;
        file.sync_all()?;
    }
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(secret),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create_secret(data_dir),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_others_do_not() {
        let auth = Authenticator::new(b"0123456789abcdef0123456789abcdef", Duration::ZERO);
        let alice = UserId::parse("alice").unwrap();
        let token = auth.issue(&alice, Duration::from_secs(60)).unwrap();
        assert_eq!(auth.verify(&token), Ok(alice.clone()));
        assert_eq!(
            auth.verify_header(Some(&format!("Bearer {token}"))),
            Ok(alice)
        );
        assert_eq!(auth.verify_header(None), Err(AuthError::Missing));
        assert_eq!(
            auth.verify_header(Some("Basic abc")),
            Err(AuthError::MalformedHeader)
        );
        assert_eq!(auth.verify("garbage"), Err(AuthError::Invalid));
        let other = Authenticator::new(b"another secret, also 32 bytes long", Duration::ZERO);
        assert_eq!(other.verify(&token), Err(AuthError::Invalid));
    }

    #[test]
    fn secret_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_secret(dir.path()).unwrap();
        let second = load_or_create_secret(dir.path()).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.len(), 32);
    }
}
