//! HMAC-signed URLs for the embedded backend's blob endpoint (its stand-in for S3
//! presigned URLs). A URL is bound to one method, one object path, one expiry and, for
//! downloads, the content type it serves; changing any of them breaks the signature.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::Millis;

type HmacSha256 = Hmac<Sha256>;

/// The signature a signed URL carries in its query: `expires` (Unix seconds), `sig`
/// (hex) and, for downloads, the content type `ct` it is served with; for a part, the
/// part's `size` and `sha256` (hex) it pins.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct SignedQuery {
    pub expires: i64,
    pub sig: String,
    pub ct: Option<String>,
    pub size: Option<u64>,
    pub sha256: Option<String>,
}

impl SignedQuery {
    /// Reads a URL's query string; `None` when it carries no well-formed signature.
    pub fn parse(query: Option<&str>) -> Option<Self> {
        serde_urlencoded::from_str(query?).ok()
    }
}

#[derive(Clone)]
pub struct UrlSigner {
    key: [u8; 32],
}

/// Why a signed URL is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the URL's signature is missing or invalid")]
    Invalid,
    #[error("the URL has expired")]
    Expired,
}

impl UrlSigner {
    /// Derives the URL key from the server's secret, so a token key and a URL key never
    /// coincide.
    pub fn derive(secret: &[u8]) -> Self {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(b"filesync/url-signing/v1");
        Self {
            key: mac.finalize().into_bytes().into(),
        }
    }

    fn mac(&self, method: &str, path: &str, expires: i64, extra: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        // Length-prefix every part so no two different inputs share a message.
        for part in [method, path, &expires.to_string(), extra] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac
    }

    /// The hex signature for a request; `expires` is in Unix seconds.
    pub fn sign(&self, method: &str, path: &str, expires: i64, extra: &str) -> String {
        hex::encode(
            self.mac(method, path, expires, extra)
                .finalize()
                .into_bytes(),
        )
    }

    /// Checks a signature in constant time, then the expiry against `now`.
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        expires: i64,
        extra: &str,
        signature: &str,
        now: Millis,
    ) -> Result<(), SignatureError> {
        let given = hex::decode(signature).map_err(|_| SignatureError::Invalid)?;
        self.mac(method, path, expires, extra)
            .verify_slice(&given)
            .map_err(|_| SignatureError::Invalid)?;
        if now / 1000 >= expires {
            return Err(SignatureError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_every_part() {
        let s = UrlSigner::derive(b"secret");
        let sig = s.sign("PUT", "/blob/a", 100, "");
        assert_eq!(s.verify("PUT", "/blob/a", 100, "", &sig, 0), Ok(()));
        for (m, p, e, x) in [
            ("GET", "/blob/a", 100, ""),
            ("PUT", "/blob/b", 100, ""),
            ("PUT", "/blob/a", 101, ""),
            ("PUT", "/blob/a", 100, "text/html"),
        ] {
            assert_eq!(s.verify(m, p, e, x, &sig, 0), Err(SignatureError::Invalid));
        }
        assert_eq!(
            s.verify("PUT", "/blob/a", 100, "", &sig, 100_000),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            s.verify("PUT", "/blob/a", 100, "", "zz", 0),
            Err(SignatureError::Invalid)
        );
        let other = UrlSigner::derive(b"other");
        assert_eq!(
            other.verify("PUT", "/blob/a", 100, "", &sig, 0),
            Err(SignatureError::Invalid)
        );
    }
}
