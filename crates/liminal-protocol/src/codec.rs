//! Length-prefixed framing: a `u32` big-endian body length, then the
//! MessagePack body of one [`Frame`].

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::frame::Frame;

/// Errors from encoding or decoding frames.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The declared body length exceeds the negotiated maximum.
    #[error("frame of {length} bytes exceeds the maximum frame size of {max} bytes")]
    FrameTooLarge { length: usize, max: usize },
    /// The body is not MessagePack for a known frame.
    #[error("frame body is not a valid frame: {0}")]
    Malformed(#[from] rmp_serde::decode::Error),
    /// Encoding failed (for example a field that MessagePack cannot represent).
    #[error("failed to encode frame: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes one frame, length prefix included, to a fresh buffer.
pub fn encode_frame(frame: &Frame) -> Result<BytesMut, CodecError> {
    let mut buffer = BytesMut::with_capacity(64);
    encode_frame_into(frame, &mut buffer)?;
    Ok(buffer)
}

/// Appends one frame, length prefix included, to `buffer`. On error the
/// buffer is left as it was.
pub fn encode_frame_into(frame: &Frame, buffer: &mut BytesMut) -> Result<(), CodecError> {
    let start = buffer.len();
    buffer.put_u32(0);
    let mut writer = buffer.writer();
    if let Err(error) = rmp_serde::encode::write_named(&mut writer, frame) {
        writer.into_inner().truncate(start);
        return Err(error.into());
    }
    let buffer = writer.into_inner();
    let body_length = (buffer.len() - start - 4) as u32;
    buffer[start..start + 4].copy_from_slice(&body_length.to_be_bytes());
    Ok(())
}

/// Decodes one frame body (without its length prefix).
pub fn decode_frame(body: &[u8]) -> Result<Frame, CodecError> {
    Ok(rmp_serde::from_slice(body)?)
}

/// A `tokio_util` codec for [`Frame`]s with a maximum body size.
///
/// An oversized length prefix is reported as [`CodecError::FrameTooLarge`]
/// before any of the body is buffered, so a hostile peer cannot make the
/// reader allocate more than the limit.
#[derive(Debug)]
pub struct FrameCodec {
    max_frame_bytes: usize,
}

/// Size of the length prefix in bytes.
const LENGTH_PREFIX_BYTES: usize = 4;

impl FrameCodec {
    /// Creates a codec that accepts bodies of at most `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> FrameCodec {
        FrameCodec { max_frame_bytes }
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, source: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if source.len() < LENGTH_PREFIX_BYTES {
            return Ok(None);
        }
        let length = u32::from_be_bytes([source[0], source[1], source[2], source[3]]) as usize;
        if length > self.max_frame_bytes {
            return Err(CodecError::FrameTooLarge {
                length,
                max: self.max_frame_bytes,
            });
        }
        let total = LENGTH_PREFIX_BYTES + length;
        if source.len() < total {
            source.reserve(total - source.len());
            return Ok(None);
        }
        source.advance(LENGTH_PREFIX_BYTES);
        let body = source.split_to(length);
        decode_frame(&body).map(Some)
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: &Frame, destination: &mut BytesMut) -> Result<(), CodecError> {
        encode_frame_into(frame, destination)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, StartPosition};
    use bytes::Bytes;
    use proptest::prelude::*;

    fn round_trip(frame: Frame) {
        let mut encoded = encode_frame(&frame).unwrap();
        let mut codec = FrameCodec::new(1 << 20);
        let decoded = codec.decode(&mut encoded).unwrap().unwrap();
        assert_eq!(decoded, frame);
        assert!(encoded.is_empty());
    }

    #[test]
    fn frames_round_trip() {
        round_trip(Frame::Hello {
            versions: vec![1],
            client_name: "cli".into(),
            token: None,
        });
        round_trip(Frame::Publish {
            request_id: 7,
            channel: "orders".into(),
            payload: Bytes::from_static(b"\x00\xffbinary"),
            headers: Some([("k".to_owned(), "v".to_owned())].into()),
            idempotency_key: Some("key-1".into()),
        });
        round_trip(Frame::Subscribe {
            request_id: 1,
            channel: "c".into(),
            start: StartPosition::Consumer("billing".into()),
            accept_schemas: None,
        });
        round_trip(Frame::error(Some(3), ErrorCode::UnknownChannel, "unknown channel \"x\""));
    }

    #[test]
    fn oversized_length_rejected_before_body_arrives() {
        let mut codec = FrameCodec::new(16);
        let mut source = BytesMut::from(&[0u8, 0, 0, 17][..]);
        let error = codec.decode(&mut source).unwrap_err();
        assert!(matches!(error, CodecError::FrameTooLarge { length: 17, max: 16 }));
    }

    #[test]
    fn garbage_body_is_malformed() {
        let mut codec = FrameCodec::new(1024);
        let mut source = BytesMut::from(&[0u8, 0, 0, 3, 0xc1, 0xc1, 0xc1][..]);
        assert!(matches!(codec.decode(&mut source), Err(CodecError::Malformed(_))));
    }

    #[test]
    fn partial_frame_waits_for_more_bytes() {
        let encoded = encode_frame(&Frame::Ping { nonce: 9 }).unwrap();
        let mut codec = FrameCodec::new(1024);
        let mut source = BytesMut::from(&encoded[..encoded.len() - 1]);
        assert!(codec.decode(&mut source).unwrap().is_none());
        source.extend_from_slice(&encoded[encoded.len() - 1..]);
        assert_eq!(codec.decode(&mut source).unwrap(), Some(Frame::Ping { nonce: 9 }));
    }

    proptest! {
        #[test]
        fn stream_split_anywhere_decodes_every_frame(split in 1usize..200, count in 1usize..8) {
            let frames: Vec<Frame> = (0..count as u64).map(|nonce| Frame::Ping { nonce }).collect();
            let mut stream = BytesMut::new();
            for frame in &frames {
                encode_frame_into(frame, &mut stream).unwrap();
            }
            let mut codec = FrameCodec::new(1024);
            let mut source = BytesMut::new();
            let mut decoded = Vec::new();
            for chunk in stream.chunks(split) {
                source.extend_from_slice(chunk);
                while let Some(frame) = codec.decode(&mut source).unwrap() {
                    decoded.push(frame);
                }
            }
            prop_assert_eq!(decoded, frames);
        }

        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_frame(&body);
        }

        #[test]
        fn publish_round_trips(request_id: u64, channel in "[a-z.]{1,20}", payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            round_trip(Frame::Publish {
                request_id,
                channel,
                payload: Bytes::from(payload),
                headers: None,
                idempotency_key: None,
            });
        }
    }
}
