//! The one encoding of everything krane stores in NATS (commands, events, records, heartbeats):
//! JSON through serde. Both directions return errors; nothing is ever published as an empty
//! payload because encoding failed.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A value that could not be encoded, or bytes that are not a value of the expected type.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct CodecError(#[from] serde_json::Error);

/// Encodes `value` as JSON.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(serde_json::to_vec(value)?)
}

/// Decodes JSON bytes as a `T`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(serde_json::from_slice(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn values_round_trip() {
        let value = BTreeMap::from([("a".to_string(), 1u32)]);
        let bytes = encode(&value).expect("encodes");
        assert_eq!(decode::<BTreeMap<String, u32>>(&bytes).ok(), Some(value));
    }

    #[test]
    fn unencodable_values_are_errors_not_empty_payloads() {
        // JSON object keys must be strings; a map keyed by tuples cannot be written.
        let value = BTreeMap::from([((1u8, 2u8), 3u8)]);
        assert!(encode(&value).is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode::<u32>(b"\xff").is_err());
        assert!(decode::<u32>(b"").is_err());
    }
}
