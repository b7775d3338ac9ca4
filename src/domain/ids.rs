//! Identifiers. Server-made ids are UUIDs; user ids come from the identity provider.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use super::Invalid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh random id.
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl FromStr for $name {
            type Err = Invalid;

            fn from_str(s: &str) -> Result<Self, Invalid> {
                Uuid::parse_str(s)
                    .map(Self)
                    .map_err(|_| Invalid(format!("{} is not a valid {} id", truncate(s), $what)))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A space: a shared collection of files.
    SpaceId,
    "space"
);
uuid_id!(
    /// A file, stable across its versions, renames and deletion.
    FileId,
    "file"
);
uuid_id!(
    /// One upload attempt (a pending version until committed).
    UploadId,
    "upload"
);

/// Echo at most a short prefix of client input in error messages.
fn truncate(s: &str) -> String {
    let mut out: String = s.chars().take(40).filter(|c| !c.is_control()).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    format!("{out:?}")
}

/// A user, as named by the identity provider (the token's subject).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    pub const MAX_LEN: usize = 256;

    pub fn parse(s: &str) -> Result<Self, Invalid> {
        if s.is_empty() {
            return Err(Invalid::new("user id must not be empty"));
        }
        if s.len() > Self::MAX_LEN {
            return Err(Invalid(format!(
                "user id is longer than {} bytes",
                Self::MAX_LEN
            )));
        }
        if s.chars().any(char::is_control) {
            return Err(Invalid::new("user id must not contain control characters"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        let id = FileId::new();
        assert_eq!(id.to_string().parse::<FileId>().unwrap(), id);
        let err = "../etc/passwd".parse::<SpaceId>().unwrap_err();
        assert!(err.0.contains("not a valid space id"), "{err}");
    }

    #[test]
    fn user_ids_are_bounded() {
        assert!(UserId::parse("alice").is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("a\u{0}b").is_err());
        assert!(UserId::parse(&"x".repeat(257)).is_err());
    }
}
