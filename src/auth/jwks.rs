//! The identity provider's public keys (a JWKS), from a file or an https URL, cached.
//!
//! Keys are looked up by `kid`. An unknown `kid` (the provider rotated its keys) fetches
//! the set again, but never more often than `min_refresh`: a stream of tokens with made-up
//! `kid`s cannot turn the server into a load generator against the provider. A set older
//! than `max_age` is fetched again on next use. While a fetch fails, the keys already
//! held keep working.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};

use super::lock;

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Where the keys come from.
#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Url(String),
}

/// A key of the set, ready to verify with.
#[derive(Clone)]
pub(super) struct Key {
    pub key: DecodingKey,
    /// `RSA` or `EC`: which algorithms it may verify.
    pub family: Family,
    /// The `alg` the set pins for this key, if any.
    pub alg: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    Rsa,
    Ec,
}

pub(super) struct Jwks {
    source: Source,
    http: reqwest::Client,
    min_refresh: Duration,
    max_age: Duration,
    state: Mutex<State>,
    /// Held while fetching: one fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

struct State {
    keys: HashMap<String, Key>,
    fetched: Option<Instant>,
    attempted: Option<Instant>,
}

impl Jwks {
    /// `location`: a path, or an `https://` URL (`http://` only for a loopback host).
    pub fn new(location: &str, min_refresh: Duration, max_age: Duration) -> anyhow::Result<Self> {
        let source = if let Some(rest) = location.strip_prefix("http://") {
            let host = rest.split(['/', ':']).next().unwrap_or_default();
            if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
                bail!("auth.jwks must be an https URL (plain http only for a loopback host)");
            }
            Source::Url(location.to_owned())
        } else if location.starts_with("https://") {
            Source::Url(location.to_owned())
        } else {
            Source::File(PathBuf::from(location))
        };
        Ok(Self {
            source,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            min_refresh,
            max_age,
            state: Mutex::new(State {
                keys: HashMap::new(),
                fetched: None,
                attempted: None,
            }),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// Fetches the set now (at start-up: a file that cannot be read is a configuration
    /// error; a provider that cannot be reached is retried on first use).
    pub async fn load(&self) -> anyhow::Result<()> {
        let _fetching = self.fetching.lock().await;
        self.fetch().await
    }

    /// The key with this `kid`, fetching the set again when it is unknown or stale (at
    /// most once per `min_refresh`).
    pub async fn key(&self, kid: &str) -> Option<Key> {
        let (known, stale) = self.lookup(kid);
        if let Some(key) = &known
            && !stale
        {
            return Some(key.clone());
        }
        if self.may_fetch() {
            let _fetching = self.fetching.lock().await;
            // Another request may have fetched while this one waited.
            let (again, stale) = self.lookup(kid);
            if (again.is_none() || stale)
                && self.may_fetch()
                && let Err(e) = self.fetch().await
            {
                tracing::warn!(error = ?e, "cannot fetch the JWKS; keeping the keys held");
            }
        }
        self.lookup(kid).0.or(known)
    }

    fn lookup(&self, kid: &str) -> (Option<Key>, bool) {
        let state = lock(&self.state);
        let stale = state.fetched.is_none_or(|at| at.elapsed() >= self.max_age);
        (state.keys.get(kid).cloned(), stale)
    }

    fn may_fetch(&self) -> bool {
        lock(&self.state)
            .attempted
            .is_none_or(|at| at.elapsed() >= self.min_refresh)
    }

    async fn fetch(&self) -> anyhow::Result<()> {
        lock(&self.state).attempted = Some(Instant::now());
        let bytes = match &self.source {
            Source::File(path) => tokio::fs::read(path)
                .await
                .with_context(|| format!("cannot read the JWKS file {}", path.display()))?,
            Source::Url(url) => {
                let response = self
                    .http
                    .get(url)
                    .send()
                    .await
                    .with_context(|| format!("cannot fetch the JWKS at {url}"))?
                    .error_for_status()
                    .with_context(|| format!("cannot fetch the JWKS at {url}"))?;
                let bytes = response.bytes().await?;
                bytes.to_vec()
            }
        };
        if bytes.len() > MAX_JWKS_BYTES {
            bail!("the JWKS is larger than {MAX_JWKS_BYTES} bytes");
        }
        let set: JwkSet = serde_json::from_slice(&bytes).context("the JWKS is not valid")?;
        let keys = usable_keys(&set.keys);
        if keys.is_empty() {
            bail!("the JWKS has no RSA or EC signing key with a kid");
        }
        let mut state = lock(&self.state);
        state.keys = keys;
        state.fetched = Some(Instant::now());
        tracing::info!(keys = state.keys.len(), "loaded the JWKS");
        Ok(())
    }
}

/// The set's RSA and EC signature keys that have a `kid`; others are ignored.
fn usable_keys(keys: &[Jwk]) -> HashMap<String, Key> {
    keys.iter()
        .filter(|jwk| {
            !matches!(
                jwk.common.public_key_use,
                Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            )
        })
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let family = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Family::Rsa,
                AlgorithmParameters::EllipticCurve(_) => Family::Ec,
                _ => return None,
            };
            let key = DecodingKey::from_jwk(jwk).ok()?;
            let alg = jwk
                .common
                .key_algorithm
                .map(|alg| format!("{alg:?}"))
                .filter(|alg| !alg.is_empty());
            Some((kid, Key { key, family, alg }))
        })
        .collect()
}
