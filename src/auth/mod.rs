//! Bearer tokens: HS256 with the server's secret, and RS256/ES256 with an identity
//! provider's JWKS (Cognito, Auth0, Keycloak, ...).
//!
//! The secret is configured (`auth.jwt_secret`), or generated on first start and kept in
//! `<data_dir>/jwt-secret` so that `filesync token` and the server agree without
//! configuration. A token's header names its algorithm; only those of the allow-list
//! (`auth.algorithms`) are accepted, and each only with its own kind of key: HMAC with the
//! secret, RSA and EC with the JWKS key its `kid` names. So `alg: none`, an HS256 token
//! signed with a public key (algorithm confusion) and a key of the wrong kind are refused.
//! `exp` is required, `nbf` honoured, both with `auth.leeway`; `iss` and `aud` are checked
//! when configured. The user is the claim `auth.user_claim` (`sub` by default).

use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, bail};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{AuthSettings, Backend, Settings};
use crate::domain::UserId;

mod jwks;

use jwks::{Family, Jwks};

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
    #[error("the token is valid for longer than this server accepts")]
    TooLong,
    #[error("invalid token")]
    Invalid,
}

fn lifetime_secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// What `issue` signs.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: i64,
    exp: i64,
}

pub struct Authenticator {
    /// HS256: the server's secret, when HMAC tokens are accepted.
    hmac: Option<(EncodingKey, DecodingKey)>,
    jwks: Option<Jwks>,
    algorithms: Vec<Algorithm>,
    issuer: Option<String>,
    audience: Vec<String>,
    user_claim: String,
    leeway: u64,
    /// Longest a token may still be valid for, in seconds.
    max_lifetime: i64,
}

impl Authenticator {
    /// HS256 tokens with `secret`, as `filesync token` mints them.
    pub fn new(secret: &[u8], leeway: Duration) -> Self {
        Self {
            hmac: Some((
                EncodingKey::from_secret(secret),
                DecodingKey::from_secret(secret),
            )),
            jwks: None,
            algorithms: vec![Algorithm::HS256],
            issuer: None,
            audience: Vec::new(),
            user_claim: "sub".to_owned(),
            leeway: leeway.as_secs(),
            max_lifetime: lifetime_secs(AuthSettings::default().max_token_lifetime),
        }
    }

    /// The same, with a maximum token lifetime.
    pub fn with_max_lifetime(mut self, max: Duration) -> Self {
        self.max_lifetime = lifetime_secs(max);
        self
    }

    /// As configured: HS256 with `secret` (when given), RS256/ES256 with `auth.jwks`.
    /// Reads the JWKS once (a provider that cannot be reached yet is retried on use).
    pub async fn from_settings(
        settings: &AuthSettings,
        secret: Option<&[u8]>,
    ) -> anyhow::Result<Self> {
        let jwks = match &settings.jwks {
            Some(location) => {
                let jwks = Jwks::new(location, settings.jwks_min_refresh, settings.jwks_max_age)?;
                if let Err(e) = jwks.load().await {
                    if location.starts_with("http") {
                        tracing::warn!(error = ?e, "cannot fetch the JWKS yet; retrying on use");
                    } else {
                        return Err(e);
                    }
                }
                Some(jwks)
            }
            None => None,
        };
        let algorithms = if settings.algorithms.is_empty() {
            let mut default = Vec::new();
            if secret.is_some() {
                default.push(Algorithm::HS256);
            }
            if jwks.is_some() {
                default.extend([Algorithm::RS256, Algorithm::ES256]);
            }
            default
        } else {
            settings
                .algorithms
                .iter()
                .map(|name| parse_algorithm(name))
                .collect::<anyhow::Result<_>>()?
        };
        for alg in &algorithms {
            match family_of(*alg) {
                None if secret.is_none() => {
                    bail!("auth.algorithms has {alg:?}, which needs auth.jwt_secret")
                }
                Some(_) if jwks.is_none() => {
                    bail!("auth.algorithms has {alg:?}, which needs auth.jwks")
                }
                _ => {}
            }
        }
        anyhow::ensure!(!algorithms.is_empty(), "no token algorithm is enabled");
        Ok(Self {
            hmac: secret.map(|s| (EncodingKey::from_secret(s), DecodingKey::from_secret(s))),
            jwks,
            algorithms,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            user_claim: settings.user_claim.clone(),
            leeway: settings.leeway.as_secs(),
            max_lifetime: lifetime_secs(settings.max_token_lifetime),
        })
    }

    /// Mints an HS256 token for `user` valid for `ttl`.
    pub fn issue(&self, user: &UserId, ttl: Duration) -> anyhow::Result<String> {
        let (encoding, _) = self
            .hmac
            .as_ref()
            .context("tokens can be minted only with auth.jwt_secret")?;
        let now = chrono::Utc::now().timestamp();
        anyhow::ensure!(
            i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX) <= self.max_lifetime,
            "a token may be valid for at most {} (auth.max_token_lifetime)",
            humantime::format_duration(Duration::from_secs(self.max_lifetime as u64))
        );
        let claims = Claims {
            sub: user.as_str().to_owned(),
            iat: now,
            exp: now + i64::try_from(ttl.as_secs()).context("ttl too long")?,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, encoding)
            .context("cannot sign token")
    }

    pub async fn verify(&self, token: &str) -> Result<UserId, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        // Fails on `alg: none` and on algorithms the library does not know.
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(AuthError::Invalid);
        }
        let key = match family_of(header.alg) {
            None => self.hmac.as_ref().ok_or(AuthError::Invalid)?.1.clone(),
            Some(family) => {
                let kid = header.kid.as_deref().ok_or(AuthError::Invalid)?;
                let jwks = self.jwks.as_ref().ok_or(AuthError::Invalid)?;
                let key = jwks.key(kid).await.ok_or(AuthError::Invalid)?;
                let pinned = key
                    .alg
                    .as_deref()
                    .is_none_or(|alg| alg == format!("{:?}", header.alg));
                if key.family != family || !pinned {
                    return Err(AuthError::Invalid);
                }
                key.key
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            validation.set_required_spec_claims(&["exp", "iss"]);
        }
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => AuthError::Expired,
                    _ => AuthError::Invalid,
                }
            })?;
        let claims = data.claims;
        let expires = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or(AuthError::Invalid)?;
        let now = chrono::Utc::now().timestamp();
        if expires.saturating_sub(now) > self.max_lifetime.saturating_add(self.leeway as i64) {
            return Err(AuthError::TooLong);
        }
        if !self.audience_matches(&claims) {
            return Err(AuthError::Invalid);
        }
        let user = claims
            .get(&self.user_claim)
            .and_then(Value::as_str)
            .ok_or(AuthError::Invalid)?;
        UserId::parse(user).map_err(|_| AuthError::Invalid)
    }

    /// `aud` (a string or a list) names a configured audience. A Cognito access token has
    /// no `aud` but names the app client in `client_id`, which is accepted instead.
    fn audience_matches(&self, claims: &Map<String, Value>) -> bool {
        if self.audience.is_empty() {
            return true;
        }
        let allowed = |v: &Value| {
            v.as_str()
                .is_some_and(|a| self.audience.iter().any(|x| x == a))
        };
        match claims.get("aud") {
            Some(Value::Array(list)) => list.iter().any(allowed),
            Some(aud) => allowed(aud),
            None => claims.get("client_id").is_some_and(allowed),
        }
    }

    /// Verifies an `Authorization` header value.
    pub async fn verify_header(&self, header: Option<&str>) -> Result<UserId, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let (scheme, token) = header
            .trim()
            .split_once(' ')
            .ok_or(AuthError::MalformedHeader)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::MalformedHeader);
        }
        self.verify(token.trim()).await
    }

    /// Verifies the payload of a websocket `connection_init`: `{"authorization": "Bearer
    /// <jwt>"}` (as a header value, the key in any case) or `{"token": "<jwt>"}`.
    pub async fn verify_connection_init(
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
            (Some(header), _) => self.verify_header(Some(header?)).await,
            (None, Some(token)) => self.verify(token?).await,
            (None, None) => Err(AuthError::Missing),
        }
    }
}

/// `None` for HMAC (the secret), else the kind of JWKS key the algorithm needs.
fn family_of(alg: Algorithm) -> Option<Family> {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => None,
        Algorithm::ES256 | Algorithm::ES384 => Some(Family::Ec),
        _ => Some(Family::Rsa),
    }
}

/// The algorithms `auth.algorithms` may name.
fn parse_algorithm(name: &str) -> anyhow::Result<Algorithm> {
    Ok(match name {
        "HS256" => Algorithm::HS256,
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        other => bail!("auth.algorithms: {other:?} is not one of HS256, RS256, ES256"),
    })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The secret HS256 tokens are signed with: configured, or on the embedded backend the
/// data dir's (created on first use). On AWS every replica must accept the same tokens,
/// so there is none unless configured; then tokens come from the JWKS only.
pub fn token_secret(settings: &Settings) -> anyhow::Result<Option<Vec<u8>>> {
    if settings.auth.jwt_secret.is_none()
        && settings.storage.backend == Backend::Aws
        && settings.auth.jwks.is_some()
    {
        return Ok(None);
    }
    server_secret(settings).map(Some)
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
            "auth.jwt_secret (FILESYNC_AUTH__JWT_SECRET) or auth.jwks must be set with the \
             aws backend: every replica must accept the same tokens"
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

    #[tokio::test]
    async fn issued_tokens_verify_and_others_do_not() {
        let auth = Authenticator::new(b"0123456789abcdef0123456789abcdef", Duration::ZERO);
        let alice = UserId::parse("alice").unwrap();
        let token = auth.issue(&alice, Duration::from_secs(60)).unwrap();
        assert_eq!(auth.verify(&token).await, Ok(alice.clone()));
        assert_eq!(
            auth.verify_header(Some(&format!("Bearer {token}"))).await,
            Ok(alice)
        );
        assert_eq!(auth.verify_header(None).await, Err(AuthError::Missing));
        assert_eq!(
            auth.verify_header(Some("Basic abc")).await,
            Err(AuthError::MalformedHeader)
        );
        assert_eq!(auth.verify("garbage").await, Err(AuthError::Invalid));
        let other = Authenticator::new(b"another secret, also 32 bytes long", Duration::ZERO);
        assert_eq!(other.verify(&token).await, Err(AuthError::Invalid));
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
