//! Stable error codes carried by the `Error` frame.
//!
//! A code is a snake_case string on the wire. Codes are never renamed or
//! reused for another meaning; a client matches on the string, and an unknown
//! string from a newer server must be treated as a generic failure.

use std::fmt;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident => $text:literal, )*) => {
        /// A stable, machine-readable error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in declaration order (used by docs and tests).
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The wire spelling of this code.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( ErrorCode::$variant => $text, )*
                }
            }

            /// Parses a wire code; `None` for a code this build does not know.
            pub fn parse(text: &str) -> Option<ErrorCode> {
                match text {
                    $( $text => Some(ErrorCode::$variant), )*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    /// A frame other than `Hello` arrived before the handshake finished.
    HelloRequired => "hello_required",
    /// A second `Hello` arrived on a connection that already finished the handshake.
    AlreadyGreeted => "already_greeted",
    /// None of the protocol versions offered in `Hello` is supported.
    UnsupportedVersion => "unsupported_version",
    /// The frame body is not valid MessagePack for any known frame. The connection is closed.
    MalformedFrame => "malformed_frame",
    /// The frame is longer than the server's maximum frame size. The connection is closed.
    FrameTooLarge => "frame_too_large",
    /// The frame is valid but a field value is not acceptable (named in the message).
    InvalidRequest => "invalid_request",
    /// The frame is one a client may not send (for example `Deliver`).
    UnexpectedFrame => "unexpected_frame",
    /// The channel is not declared and automatic channel creation is off.
    UnknownChannel => "unknown_channel",
    /// The subscription id is not one of this connection's subscriptions.
    UnknownSubscription => "unknown_subscription",
    /// The channel actor stopped before it handled the request; retry it.
    ChannelUnavailable => "channel_unavailable",
    /// The token in `Hello` is missing or wrong. The connection is closed.
    Unauthorized => "unauthorized",
    /// The server is at its connection limit. The connection is closed.
    TooManyConnections => "too_many_connections",
    /// The connection is at its subscription limit.
    TooManySubscriptions => "too_many_subscriptions",
    /// The connection is at its open-conversation limit.
    TooManyConversations => "too_many_conversations",
    /// The subscriber did not read fast enough and its connection is closed.
    SlowConsumer => "slow_consumer",
    /// The idempotency key is longer than 256 bytes.
    IdempotencyKeyTooLong => "idempotency_key_too_long",
    /// The payload is not JSON or does not validate against the channel's schema.
    SchemaValidationFailed => "schema_validation_failed",
    /// The channel's schema id is not among the ids the subscriber accepts.
    SchemaMismatch => "schema_mismatch",
    /// No responder is registered for the subject and unknown subjects are rejected.
    NoResponder => "no_responder",
    /// The conversation id is not an open conversation of this connection.
    UnknownConversation => "unknown_conversation",
    /// The conversation already holds its maximum number of queued messages.
    ConversationQueueFull => "conversation_queue_full",
    /// The start position of a subscribe is not valid for the channel.
    InvalidStartPosition => "invalid_start_position",
    /// The durable store failed to write or read; the message was not acknowledged.
    StorageFailed => "storage_failed",
    /// The server is shutting down and accepts no new work.
    Draining => "draining",
    /// `InjectFault` was sent to a server whose fault injection is disabled.
    FaultInjectionDisabled => "fault_injection_disabled",
    /// An unexpected server-side failure; the message says which.
    Internal => "internal",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_text() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
        }
    }

    #[test]
    fn codes_are_snake_case_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(text.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{text}");
            assert!(seen.insert(text), "duplicate code {text}");
        }
    }
}
