//! How the embedded relay stores one event in sled.
//!
//! Events are stored in a binary form: the id, key and signature as their bytes and every
//! string length-prefixed. The JSON that soko first stored (itself escaped into a JSON
//! string, as every sled value was) cost the relay a second serialization of each event,
//! with 256 hex digits formatted one byte at a time and every quote escaped, on the path
//! to each `OK`. This form is a copy, a quarter smaller for a short DM (the hex digits and
//! the escapes go), and reads back without parsing.
//! Stores written by earlier builds keep their JSON values, which are still read: the
//! first byte tells the two apart, and a compaction copies values as they are.

use nostr_sdk::secp256k1::schnorr::Signature;
use nostr_sdk::{Event, EventId, JsonUtil, Kind, PublicKey, Tag, Timestamp};

/// The first byte of a value soko stored as JSON (the event's JSON as a JSON string; see
/// `crate::store::encode`).
const JSON: u8 = 1;
/// The first byte of a value in the binary form.
const BINARY: u8 = 2;

/// Why a stored value is not an event.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Nothing was stored.
    #[error("empty value")]
    Empty,
    /// A first byte this build does not know: written by a newer soko.
    #[error("unknown event encoding {0}")]
    UnknownEncoding(u8),
    /// The value ends before its last field.
    #[error("stored event cut short")]
    Truncated,
    /// Bytes follow the last field.
    #[error("{0} bytes after the stored event")]
    Trailing(usize),
    /// A field that is not what it says (a string not UTF-8, an empty tag, a bad key).
    #[error("stored event: {0}")]
    Invalid(String),
}

/// The value stored for `event`.
pub fn encode(event: &Event) -> Vec<u8> {
    let tags = event.tags.as_slice();
    let strings: usize = tags
        .iter()
        .map(|tag| tag.as_slice().iter().map(|s| 4 + s.len()).sum::<usize>() + 4)
        .sum();
    let mut out =
        Vec::with_capacity(1 + 32 + 32 + 64 + 8 + 2 + 4 + event.content.len() + 4 + strings);
    out.push(BINARY);
    out.extend_from_slice(event.id.as_bytes());
    out.extend_from_slice(event.pubkey.as_bytes());
    out.extend_from_slice(&event.sig.serialize());
    out.extend_from_slice(&event.created_at.as_secs().to_le_bytes());
    out.extend_from_slice(&event.kind.as_u16().to_le_bytes());
    put_str(&mut out, &event.content);
    put_len(&mut out, tags.len());
    for tag in tags {
        let fields = tag.as_slice();
        put_len(&mut out, fields.len());
        for field in fields {
            put_str(&mut out, field);
        }
    }
    out
}

/// The event stored as `bytes`, in either form.
pub fn decode(bytes: &[u8]) -> Result<Event, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&BINARY, body)) => decode_binary(body),
        Some((&JSON, body)) => {
            let json: String =
                serde_json::from_slice(body).map_err(|e| CodecError::Invalid(e.to_string()))?;
            Event::from_json(json).map_err(|e| CodecError::Invalid(e.to_string()))
        }
        Some((&other, _)) => Err(CodecError::UnknownEncoding(other)),
    }
}

fn decode_binary(body: &[u8]) -> Result<Event, CodecError> {
    let mut reader = Reader(body);
    let id = EventId::from_byte_array(reader.array()?);
    let pubkey = PublicKey::from_byte_array(reader.array()?);
    let sig = Signature::from_slice(&reader.array::<64>()?)
        .map_err(|e| CodecError::Invalid(e.to_string()))?;
    let created_at = Timestamp::from(u64::from_le_bytes(reader.array()?));
    let kind = Kind::from(u16::from_le_bytes(reader.array()?));
    let content = reader.string()?;
    let count = reader.len()?;
    // Each tag takes at least its 4-byte count: a count beyond what is left is corrupt, and
    // must not size an allocation.
    let mut tags = Vec::with_capacity(count.min(reader.0.len() / 4));
    for _ in 0..count {
        let fields = reader.len()?;
        let mut tag = Vec::with_capacity(fields.min(reader.0.len() / 4));
        for _ in 0..fields {
            tag.push(reader.string()?);
        }
        tags.push(Tag::parse(tag).map_err(|e| CodecError::Invalid(e.to_string()))?);
    }
    if !reader.0.is_empty() {
        return Err(CodecError::Trailing(reader.0.len()));
    }
    Ok(Event::new(id, pubkey, created_at, kind, tags, content, sig))
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Events are capped far below 4 GiB (`[relay] max_event_bytes`, the frame guard).
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], CodecError> {
        if self.0.len() < n {
            return Err(CodecError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn len(&mut self) -> Result<usize, CodecError> {
        Ok(u32::from_le_bytes(self.array()?) as usize)
    }

    fn string(&mut self) -> Result<String, CodecError> {
        let len = self.len()?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| CodecError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use nostr_sdk::{EventBuilder, Keys};
    use proptest::prelude::*;

    use super::*;

    fn event(
        content: &str,
        tags: Vec<Vec<String>>,
        kind: u16,
    ) -> Result<Event, nostr_sdk::event::builder::Error> {
        let tags = tags
            .into_iter()
            .filter(|t| !t.is_empty())
            .filter_map(|t| Tag::parse(t).ok());
        EventBuilder::new(Kind::from(kind), content)
            .tags(tags)
            .sign_with_keys(&Keys::generate())
    }

    fn fail(e: impl std::fmt::Display) -> TestCaseError {
        TestCaseError::fail(e.to_string())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn every_event_reads_back_as_it_was_written(
            content in ".{0,200}",
            tags in prop::collection::vec(prop::collection::vec(".{0,20}", 0..4), 0..6),
            kind in any::<u16>(),
        ) {
            let event = event(&content, tags, kind).map_err(fail)?;
            let back = decode(&encode(&event)).map_err(fail)?;
            prop_assert_eq!(back.as_json(), event.as_json());
            prop_assert!(back.verify().is_ok());
        }

        #[test]
        fn no_cut_or_garbage_decodes_or_panics(
            cut in 0usize..400,
            garbage in prop::collection::vec(any::<u8>(), 0..300),
        ) {
            let bytes = encode(&event("hello", vec![vec!["p".into(), "x".into()]], 4).map_err(fail)?);
            if cut < bytes.len() {
                prop_assert!(decode(&bytes[..cut]).is_err());
            }
            let mut junk = vec![BINARY];
            junk.extend_from_slice(&garbage);
            let _ = decode(&junk);
        }
    }

    #[test]
    fn json_values_of_earlier_builds_still_read() -> Result<(), Box<dyn std::error::Error>> {
        let event = event("old", vec![vec!["p".into(), "y".into()]], 4)?;
        let legacy = crate::store::encode(&event.as_json())?;
        assert_eq!(legacy[0], JSON);
        assert_eq!(decode(&legacy)?.as_json(), event.as_json());
        Ok(())
    }

    #[test]
    fn the_binary_form_is_smaller_than_the_json() -> Result<(), Box<dyn std::error::Error>> {
        let event = event(&"c".repeat(400), vec![vec!["p".into(), "a".repeat(64)]], 4)?;
        let json = crate::store::encode(&event.as_json())?;
        // 624 bytes against 825: the hex of the id, key, signature and tag, and the escapes.
        assert!(encode(&event).len() * 4 < json.len() * 3);
        Ok(())
    }

    #[test]
    fn corrupt_values_are_errors() -> Result<(), Box<dyn std::error::Error>> {
        let bytes = encode(&event("x", vec![], 1)?);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(decode(&trailing), Err(CodecError::Trailing(1))));
        assert!(matches!(decode(&[]), Err(CodecError::Empty)));
        assert!(matches!(
            decode(&[9, 1]),
            Err(CodecError::UnknownEncoding(9))
        ));
        // A tag count of 4 billion with nothing behind it.
        let mut huge = bytes[..bytes.len() - 4].to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&huge), Err(CodecError::Truncated)));
        Ok(())
    }
}
