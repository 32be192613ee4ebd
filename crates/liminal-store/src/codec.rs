//! Value encodings: MessagePack for records and receipts, fixed-width
//! big-endian integers for cursors and channel state.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};

/// A message as stored in the `streams` column family.
///
/// Encoded with `rmp_serde::to_vec`, so fields are a positional MessagePack
/// array: changing their order or meaning needs a new format version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredRecord {
    pub timestamp_ms: u64,
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
    pub idempotency_key: Option<String>,
    /// Logical byte position of the channel after this record: the sum of
    /// `record_size` of every record ever appended up to and including this one.
    /// Retention by size binary-searches this field.
    pub end_position: u64,
}

/// Borrowing twin of [`StoredRecord`] so appends encode without copying headers.
#[derive(Serialize)]
pub(crate) struct StoredRecordRef<'a> {
    pub timestamp_ms: u64,
    pub headers: &'a Vec<(String, String)>,
    pub payload: &'a Bytes,
    pub idempotency_key: &'a Option<String>,
    pub end_position: u64,
}

/// A message read back from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Offset in the channel; for durable channels this is also the message id.
    pub offset: u64,
    pub timestamp_ms: u64,
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
    pub idempotency_key: Option<String>,
}

/// Proof that a message with a given idempotency key was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Offset of the stored message, which is also its message id.
    pub offset: u64,
    /// Timestamp of the stored message, used to expire the receipt.
    pub timestamp_ms: u64,
}

/// Per-channel stream state kept in `meta`, updated in the same batch as the
/// records it describes.
///
/// Invariant: the stream contains exactly the offsets `first..=last`, so it is
/// empty when `first == last + 1`. A new channel is `{first: 1, last: 0}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChannelState {
    pub first: u64,
    pub last: u64,
    pub end_position: u64,
}

impl ChannelState {
    pub const NEW: ChannelState = ChannelState {
        first: 1,
        last: 0,
        end_position: 0,
    };

    pub fn encode(&self) -> [u8; 24] {
        let mut value = [0u8; 24];
        value[..8].copy_from_slice(&self.first.to_be_bytes());
        value[8..16].copy_from_slice(&self.last.to_be_bytes());
        value[16..].copy_from_slice(&self.end_position.to_be_bytes());
        value
    }

    pub fn decode(key: &[u8], value: &[u8]) -> Result<ChannelState> {
        let fields = <[u8; 24]>::try_from(value).map_err(|_| StoreError::Decode {
            what: "channel state",
            key: key.to_vec(),
            reason: format!("expected 24 bytes, found {}", value.len()),
        })?;
        let field = |i: usize| u64::from_be_bytes(fields[i * 8..i * 8 + 8].try_into().unwrap());
        Ok(ChannelState {
            first: field(0),
            last: field(1),
            end_position: field(2),
        })
    }
}

/// Size that retention by bytes counts for one record: payload, header names
/// and values, and the idempotency key. MessagePack framing is not counted.
pub(crate) fn record_size(
    headers: &[(String, String)],
    payload: &[u8],
    idempotency_key: Option<&str>,
) -> u64 {
    let header_bytes: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    (payload.len() + header_bytes + idempotency_key.map_or(0, str::len)) as u64
}

pub(crate) fn encode_msgpack<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec(value).map_err(|e| StoreError::Encode {
        what,
        reason: e.to_string(),
    })
}

pub(crate) fn decode_msgpack<'de, T: Deserialize<'de>>(
    what: &'static str,
    key: &[u8],
    value: &'de [u8],
) -> Result<T> {
    rmp_serde::from_slice(value).map_err(|e| StoreError::Decode {
        what,
        key: key.to_vec(),
        reason: e.to_string(),
    })
}

pub(crate) fn decode_u64(what: &'static str, key: &[u8], value: &[u8]) -> Result<u64> {
    let bytes = <[u8; 8]>::try_from(value).map_err(|_| StoreError::Decode {
        what,
        key: key.to_vec(),
        reason: format!("expected 8 bytes, found {}", value.len()),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

pub(crate) fn decode_u32(what: &'static str, key: &[u8], value: &[u8]) -> Result<u32> {
    let bytes = <[u8; 4]>::try_from(value).map_err(|_| StoreError::Decode {
        what,
        key: key.to_vec(),
        reason: format!("expected 4 bytes, found {}", value.len()),
    })?;
    Ok(u32::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ref_decodes_as_record() {
        let headers = vec![("content-type".to_string(), "text/plain".to_string())];
        let payload = Bytes::from_static(b"hello");
        let key = Some("k-1".to_string());
        let encoded = encode_msgpack(
            "stream record",
            &StoredRecordRef {
                timestamp_ms: 42,
                headers: &headers,
                payload: &payload,
                idempotency_key: &key,
                end_position: 99,
            },
        )
        .unwrap();

        let decoded: StoredRecord = decode_msgpack("stream record", b"k", &encoded).unwrap();
        assert_eq!(decoded.timestamp_ms, 42);
        assert_eq!(decoded.headers, headers);
        assert_eq!(decoded.payload, payload);
        assert_eq!(decoded.idempotency_key, key);
        assert_eq!(decoded.end_position, 99);
    }

    #[test]
    fn channel_state_round_trips() {
        let state = ChannelState {
            first: 3,
            last: 9,
            end_position: 1 << 40,
        };
        assert_eq!(ChannelState::decode(b"k", &state.encode()).unwrap(), state);
        assert!(ChannelState::decode(b"k", &[0u8; 23]).is_err());
    }
}
