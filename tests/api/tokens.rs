//! Tokens from a real identity provider: RS256 and ES256 verified with a JWKS this test
//! serves on loopback (fetched, cached, refetched on rotation), `iss`, `aud`, `exp`, `nbf`
//! and the algorithm allow-list; the same rules on websocket `connection_init`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app_with};
use crate::ws_client::TRANSPORT_WS;

const ISSUER: &str = "https://idp.example.test/pool";
const AUDIENCE: &str = "filesync-app";

/// The test keys (made for these tests only; not secrets of anything).
fn keys() -> Value {
    serde_json::from_str(include_str!("../fixtures/jwt-test-keys.json")).unwrap()
}

/// Signs `claims` with test key `kid` (its header says `alg`, unless `header_alg` overrides).
fn sign(kid: &str, claims: &Value) -> String {
    sign_as(kid, None, claims)
}

fn sign_as(kid: &str, header_alg: Option<Algorithm>, claims: &Value) -> String {
    let key = &keys()[kid];
    let der = base64::engine::general_purpose::STANDARD
        .decode(key["private_der"].as_str().unwrap())
        .unwrap();
    let (alg, encoding) = match key["alg"].as_str().unwrap() {
        "RS256" => (Algorithm::RS256, EncodingKey::from_rsa_der(&der)),
        _ => (Algorithm::ES256, EncodingKey::from_ec_der(&der)),
    };
    let mut header = Header::new(header_alg.unwrap_or(alg));
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &encoding).unwrap()
}

/// `token` with its header replaced (the signature no longer matches, if it ever would).
fn reheader(token: &str, header: &Value) -> String {
    let header = serde_json::to_vec(header).unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(header);
    let (_, rest) = token.split_once('.').unwrap();
    format!("{b64}.{rest}")
}

/// A token with the given header and claims, signed with HMAC-SHA256 over `secret`.
fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let message = format!("{}.{}", b64(header), b64(claims));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(message.as_bytes());
    let signature =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{message}.{signature}")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(user: &str) -> Value {
    json!({ "sub": user, "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 600 })
}

/// A JWKS endpoint on loopback: serves the named test keys, counts its fetches.
struct Provider {
    url: String,
    served: Arc<Mutex<Vec<&'static str>>>,
    fetches: Arc<AtomicUsize>,
}

impl Provider {
    async fn start(kids: &[&'static str]) -> Self {
        let served = Arc::new(Mutex::new(kids.to_vec()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (s, f) = (served.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let (served, fetches) = (s.clone(), f.clone());
                async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let keys = keys();
                    let set: Vec<Value> = served
                        .lock()
                        .unwrap()
                        .iter()
                        .map(|kid| keys[kid]["jwk"].clone())
                        .collect();
                    axum::Json(json!({ "keys": set }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            served,
            fetches,
        }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn serve(&self, kids: &[&'static str]) {
        *self.served.lock().unwrap() = kids.to_vec();
    }
}

async fn app_for(provider: &Provider) -> TestApp {
    let url = provider.url.clone();
    spawn_app_with(move |s| {
        s.auth.jwks = Some(url);
        s.auth.issuer = Some(ISSUER.to_owned());
        s.auth.audience = vec![AUDIENCE.to_owned()];
        s.auth.jwks_min_refresh = Duration::from_millis(500);
        s.auth.leeway = Duration::from_secs(5);
        s.auth.algorithms = vec!["RS256".to_owned(), "ES256".to_owned()];
    })
    .await
}

/// `me` with this bearer token: the user id, or the error code.
async fn me(app: &TestApp, token: &str) -> Result<String, String> {
    let body: Value = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(token)
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    match body["data"]["me"]["id"].as_str() {
        Some(id) => Ok(id.to_owned()),
        None => Err(body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()),
    }
}

#[tokio::test]
async fn a_jwks_on_loopback_is_fetched_cached_and_rotated() {
    let provider = Provider::start(&["rsa-1", "ec-1"]).await;
    let app = app_for(&provider).await;
    assert_eq!(provider.fetches(), 1, "read once at start-up");

    assert_eq!(
        me(&app, &sign("rsa-1", &claims("alice"))).await,
        Ok("alice".into())
    );
    assert_eq!(
        me(&app, &sign("ec-1", &claims("bob"))).await,
        Ok("bob".into())
    );
    assert_eq!(
        me(&app, &sign("rsa-1", &claims("carol"))).await,
        Ok("carol".into())
    );
    assert_eq!(provider.fetches(), 1, "cached");

    // A kid the provider does not publish yet: fetched again once (past the refresh
    // floor, counted from the last fetch), then not again within the floor, however many
    // such tokens come.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let unknown = sign("rsa-2", &claims("dave"));
    assert_eq!(me(&app, &unknown).await, Err("UNAUTHENTICATED".into()));
    assert_eq!(provider.fetches(), 2);
    for _ in 0..5 {
        assert_eq!(me(&app, &unknown).await, Err("UNAUTHENTICATED".into()));
    }
    assert_eq!(provider.fetches(), 2, "the refresh floor holds");

    // The provider rotates: rsa-2 in, rsa-1 out.
    provider.serve(&["rsa-2", "ec-1"]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(me(&app, &unknown).await, Ok("dave".into()));
    assert_eq!(provider.fetches(), 3);
    assert_eq!(
        me(&app, &sign("rsa-1", &claims("alice"))).await,
        Err("UNAUTHENTICATED".into()),
        "a key rotated out is refused"
    );

    // Same rules on the websocket.
    let mut ws = app.ws_connect(TRANSPORT_WS).await;
    ws.send(json!({ "type": "connection_init",
        "payload": { "authorization": format!("Bearer {}", sign("ec-1", &claims("erin"))) } }))
        .await;
    assert_eq!(ws.recv().await.unwrap()["type"], "connection_ack");
    let mut ws = app.ws_connect(TRANSPORT_WS).await;
    ws.send(json!({ "type": "connection_init",
        "payload": { "token": sign("rsa-1", &claims("alice")) } }))
        .await;
    assert_eq!(ws.closed().await.0, Some(4403));
}

#[tokio::test]
async fn every_kind_of_bad_token_is_unauthenticated() {
    let provider = Provider::start(&["rsa-1", "ec-1"]).await;
    let app = app_for(&provider).await;
    let keys = keys();
    let public_pem = keys["rsa-1"]["public_pem"].as_str().unwrap().as_bytes();
    let with = |changes: Value| {
        let mut c = claims("mallory");
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let none_header = json!({ "alg": "none", "typ": "JWT" });
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!("{}.{}.", b64(&none_header), b64(&claims("mallory"))),
        ),
        (
            "HS256 signed with the RSA public key (algorithm confusion)",
            hs256(
                &json!({ "alg": "HS256", "typ": "JWT", "kid": "rsa-1" }),
                &claims("mallory"),
                public_pem,
            ),
        ),
        (
            "HS256 with the server's own secret, not in the allow-list here",
            app.token("mallory"),
        ),
        (
            "a kid the provider does not have",
            reheader(
                &sign("rsa-1", &claims("mallory")),
                &json!({ "alg": "RS256", "kid": "nope" }),
            ),
        ),
        ("no kid", {
            let key = &keys["rsa-1"];
            let der = base64::engine::general_purpose::STANDARD
                .decode(key["private_der"].as_str().unwrap())
                .unwrap();
            jsonwebtoken::encode(
                &Header::new(Algorithm::RS256),
                &claims("mallory"),
                &EncodingKey::from_rsa_der(&der),
            )
            .unwrap()
        }),
        (
            "an EC key named by an RS256 header",
            reheader(
                &sign("ec-1", &claims("mallory")),
                &json!({ "alg": "RS256", "kid": "ec-1" }),
            ),
        ),
        (
            "an RSA key named by an ES256 header",
            reheader(
                &sign("rsa-1", &claims("mallory")),
                &json!({ "alg": "ES256", "kid": "rsa-1" }),
            ),
        ),
        (
            "an algorithm outside the allow-list (RS384)",
            sign_as("rsa-1", Some(Algorithm::RS384), &claims("mallory")),
        ),
        (
            "wrong issuer",
            sign("rsa-1", &with(json!({ "iss": "https://evil.test" }))),
        ),
        ("no issuer", sign("rsa-1", &with(json!({ "iss": null })))),
        (
            "wrong audience",
            sign("rsa-1", &with(json!({ "aud": "another-app" }))),
        ),
        ("no audience", sign("rsa-1", &with(json!({ "aud": null })))),
        (
            "expired",
            sign("rsa-1", &with(json!({ "exp": now() - 60 }))),
        ),
        ("no exp", sign("rsa-1", &with(json!({ "exp": null })))),
        (
            "valid until the year 9999",
            sign("rsa-1", &with(json!({ "exp": 253_402_300_799_i64 }))),
        ),
        (
            "valid for longer than auth.max_token_lifetime (30 days)",
            sign("rsa-1", &with(json!({ "exp": now() + 31 * 24 * 3600 }))),
        ),
        (
            "not yet valid",
            sign("rsa-1", &with(json!({ "nbf": now() + 600 }))),
        ),
        (
            "no user claim",
            sign("rsa-1", &with(json!({ "sub": null }))),
        ),
        ("an empty user", sign("rsa-1", &with(json!({ "sub": "" })))),
        (
            "a user that is not a string",
            sign("rsa-1", &with(json!({ "sub": 42 }))),
        ),
        ("a tampered payload", {
            let t = sign("rsa-1", &claims("mallory"));
            let parts: Vec<&str> = t.split('.').collect();
            format!("{}.{}.{}", parts[0], b64(&claims("admin")), parts[2])
        }),
        ("garbage", "not.a.token".to_owned()),
        ("empty", String::new()),
    ];
    for (what, token) in &cases {
        assert_eq!(
            me(&app, token).await,
            Err("UNAUTHENTICATED".into()),
            "{what}"
        );
    }
    // Within the leeway, an expired token still passes; Cognito access tokens name the
    // app in `client_id` instead of `aud`.
    assert!(
        me(&app, &sign("rsa-1", &with(json!({ "exp": now() - 2 }))))
            .await
            .is_ok()
    );
    let access = with(json!({ "aud": null, "client_id": AUDIENCE, "token_use": "access" }));
    assert_eq!(
        me(&app, &sign("rsa-1", &access)).await,
        Ok("mallory".into())
    );

    // The websocket applies the same rules.
    for (what, token) in &cases[..3] {
        let mut ws = app.ws_connect(TRANSPORT_WS).await;
        ws.send(json!({ "type": "connection_init", "payload": { "token": token } }))
            .await;
        assert_eq!(ws.closed().await.0, Some(4403), "{what}");
    }
}

/// Which claim names the user is configurable.
#[tokio::test]
async fn the_user_claim_is_configurable() {
    let provider = Provider::start(&["rsa-1"]).await;
    let url = provider.url.clone();
    let app = spawn_app_with(move |s| {
        s.auth.jwks = Some(url);
        s.auth.user_claim = "username".to_owned();
    })
    .await;
    let token = sign(
        "rsa-1",
        &json!({ "sub": "uuid-1", "username": "zoe", "exp": now() + 60 }),
    );
    assert_eq!(me(&app, &token).await, Ok("zoe".into()));
    // Without an allow-list, HS256 tokens of the server's own secret pass next to the
    // JWKS ones; this one has no `username`, so it names nobody.
    assert_eq!(
        me(&app, &app.token("yann")).await,
        Err("UNAUTHENTICATED".into())
    );
}
