//! The sync cursor: an opaque string that encodes (space, seq).
//!
//! Clients must treat it as opaque; it is versioned so the encoding can change. A cursor
//! names its space so that a cursor of one space given for another is refused rather than
//! silently skipping changes.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::SpaceId;

const VERSION: u8 = 1;
const ENCODED_LEN: usize = 1 + 16 + 8;

/// A position in a space's change sequence: "everything up to and including `seq`".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub space: SpaceId,
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("malformed cursor")]
    Malformed,
    #[error("cursor belongs to another space")]
    OtherSpace,
}

impl Cursor {
    pub fn new(space: SpaceId, seq: u64) -> Self {
        Self { space, seq }
    }

    pub fn encode(&self) -> String {
        let mut raw = [0u8; ENCODED_LEN];
        raw[0] = VERSION;
        raw[1..17].copy_from_slice(self.space.as_uuid().as_bytes());
        raw[17..].copy_from_slice(&self.seq.to_be_bytes());
        URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn decode(s: &str) -> Result<Self, CursorError> {
        // A valid cursor is exactly 34 characters; refuse anything else before decoding.
        if s.len() > 64 {
            return Err(CursorError::Malformed);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| CursorError::Malformed)?;
        if raw.len() != ENCODED_LEN || raw[0] != VERSION {
            return Err(CursorError::Malformed);
        }
        let space = uuid::Uuid::from_slice(&raw[1..17]).map_err(|_| CursorError::Malformed)?;
        let seq = u64::from_be_bytes(raw[17..].try_into().map_err(|_| CursorError::Malformed)?);
        if seq > i64::MAX as u64 {
            return Err(CursorError::Malformed);
        }
        Ok(Self {
            space: space.into(),
            seq,
        })
    }

    /// Decode a cursor and check that it belongs to `space`.
    pub fn decode_for(s: &str, space: SpaceId) -> Result<Self, CursorError> {
        let cursor = Self::decode(s)?;
        if cursor.space != space {
            return Err(CursorError::OtherSpace);
        }
        Ok(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let c = Cursor::new(SpaceId::new(), 42);
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn refuses_garbage_and_other_spaces() {
        assert_eq!(Cursor::decode("nope"), Err(CursorError::Malformed));
        assert_eq!(Cursor::decode(""), Err(CursorError::Malformed));
        assert_eq!(
            Cursor::decode(&"A".repeat(1000)),
            Err(CursorError::Malformed)
        );
        let c = Cursor::new(SpaceId::new(), 1);
        assert_eq!(
            Cursor::decode_for(&c.encode(), SpaceId::new()),
            Err(CursorError::OtherSpace)
        );
        let mut tampered = c.encode().into_bytes();
        tampered[0] = b'B';
        assert!(Cursor::decode(std::str::from_utf8(&tampered).unwrap()).is_err());
    }
}
