//! Property tests (proptest) of the parsers that read client input before anything else
//! does: cursors, file names, and the signature query of signed blob URLs. Each property
//! runs a bounded number of generated cases (`PROPTEST_CASES`, default below), so the
//! test command's time stays fixed; a failure prints the smallest input that shows it.

use filesync::domain::{Cursor, FileName, SpaceId};
use filesync::storage::url_signing::{SignatureError, SignedQuery, UrlSigner};
use proptest::prelude::*;
use unicode_normalization::UnicodeNormalization;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000);
    ProptestConfig {
        cases,
        // Shrunk failures are reported, not saved next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn space() -> impl Strategy<Value = SpaceId> {
    any::<[u8; 16]>().prop_map(|bytes| SpaceId::from(uuid::Uuid::from_bytes(bytes)))
}

/// Text that looks like names: path-ish characters, dots, slashes, controls, combining
/// marks and other Unicode, at lengths around the limits.
fn name_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z./\\\\ \u{0}\u{7f}\u{301}é]{0,40}",
        "([a-z]{1,3}|\\.|\\.\\.|)(/([a-z]{1,3}|\\.|\\.\\.|)){0,6}",
        "[a-zé]{200,300}(/[a-z]{1,10}){0,2}",
        "([a-z]{250,256}/){3,5}[a-z]{1,5}",
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_decodes_to_a_cursor_or_an_error(text in any::<String>()) {
        let _ = Cursor::decode(&text);
    }

    #[test]
    fn cursors_round_trip_and_name_their_space(space in space(), other in space(), seq in 0..=i64::MAX as u64) {
        let encoded = Cursor::new(space, seq).encode();
        prop_assert_eq!(Cursor::decode(&encoded), Ok(Cursor::new(space, seq)));
        prop_assert_eq!(Cursor::decode_for(&encoded, space), Ok(Cursor::new(space, seq)));
        if other != space {
            prop_assert!(Cursor::decode_for(&encoded, other).is_err());
        }
    }

    #[test]
    fn a_mangled_cursor_is_refused_or_still_well_formed(space in space(), seq in 0..=i64::MAX as u64, at in 0usize..34, with in "[A-Za-z0-9_=+/.-]") {
        let mut encoded = Cursor::new(space, seq).encode();
        encoded.replace_range(at..at + 1, &with);
        if let Ok(cursor) = Cursor::decode(&encoded) {
            prop_assert!(cursor.seq <= i64::MAX as u64);
            prop_assert_eq!(cursor.encode(), encoded);
        }
    }

    #[test]
    fn a_valid_name_keeps_every_rule(raw in name_like()) {
        let Ok(name) = FileName::parse(&raw) else { return Ok(()) };
        let name = name.as_str();
        prop_assert!(!name.is_empty() && name.len() <= FileName::MAX_BYTES);
        prop_assert!(!name.starts_with('/') && !name.contains('\\'));
        prop_assert!(!name.chars().any(char::is_control));
        prop_assert_eq!(name.nfc().collect::<String>(), name, "NFC");
        for segment in name.split('/') {
            prop_assert!(!segment.is_empty() && segment != "." && segment != "..");
            prop_assert!(segment.len() <= FileName::MAX_SEGMENT_BYTES);
        }
        prop_assert_eq!(FileName::parse(name).map(|n| n.as_str().to_owned()), Ok(name.to_owned()), "idempotent");
    }

    #[test]
    fn any_query_parses_to_a_signature_or_none(query in any::<String>()) {
        let _ = SignedQuery::parse(Some(&query));
    }

    #[test]
    fn a_signed_url_verifies_only_as_signed(
        method in "(GET|PUT)",
        path in "/blob/[a-z0-9-]{1,40}/[a-z0-9-]{1,40}",
        expires in 1i64..4_000_000_000,
        extra in "[a-z/]{0,12}",
        other_path in "/blob/[a-z0-9-]{1,40}/[a-z0-9-]{1,40}",
        flip in 0usize..64,
        junk in any::<String>(),
    ) {
        let signer = UrlSigner::derive(b"property tests");
        let sig = signer.sign(&method, &path, expires, &extra);
        let query = format!("expires={expires}&sig={sig}&ct={}", if extra.is_empty() { "x" } else { &extra });
        let parsed = SignedQuery::parse(Some(&query)).expect("a signed query parses");
        prop_assert_eq!((parsed.expires, &parsed.sig), (expires, &sig));

        let before = (expires - 1) * 1000;
        prop_assert_eq!(signer.verify(&method, &path, expires, &extra, &sig, before), Ok(()));
        prop_assert_eq!(signer.verify(&method, &path, expires, &extra, &sig, expires * 1000), Err(SignatureError::Expired));
        let other_method = if method == "GET" { "PUT" } else { "GET" };
        prop_assert_eq!(signer.verify(other_method, &path, expires, &extra, &sig, before), Err(SignatureError::Invalid));
        if other_path != path {
            prop_assert_eq!(signer.verify(&method, &other_path, expires, &extra, &sig, before), Err(SignatureError::Invalid));
        }
        prop_assert_eq!(signer.verify(&method, &path, expires + 1, &extra, &sig, before), Err(SignatureError::Invalid));
        prop_assert_eq!(signer.verify(&method, &path, expires, &format!("{extra}x"), &sig, before), Err(SignatureError::Invalid));
        let mut tampered = sig.clone().into_bytes();
        tampered[flip] = if tampered[flip] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(tampered).unwrap();
        prop_assert_eq!(signer.verify(&method, &path, expires, &extra, &tampered, before), Err(SignatureError::Invalid));
        prop_assert_eq!(signer.verify(&method, &path, expires, &extra, &junk, before).is_ok(), junk == sig);
    }
}
