//! Liminal's wire protocol: frame types, MessagePack encoding, length-prefixed
//! framing, protocol version negotiation and the stable error codes.
//!
//! Every frame on the wire is a `u32` big-endian length followed by that many
//! bytes of MessagePack. The body is a [`Frame`]: a map with one key, the frame
//! name, whose value is a map of the frame's named fields. `docs/protocol.md`
//! specifies every frame for implementers in other languages.
//!
//! This crate holds no server logic, so the broker, the client and third-party
//! tools share one definition of the protocol.

mod codec;
mod error_code;
mod frame;
mod version;

pub use codec::{CodecError, FrameCodec, decode_frame, encode_frame, encode_frame_into};
pub use error_code::ErrorCode;
pub use frame::{Frame, Headers, StartPosition};
pub use version::{PROTOCOL_VERSION, SUPPORTED_VERSIONS, negotiate_version};

/// Default maximum frame size in bytes (length prefix excluded), used by the
/// client before the server's `Welcome` names the real limit.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 1024 * 1024;
