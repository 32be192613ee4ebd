//! A frame-level connection without any client logic, for tools and tests
//! that need to send exactly the frames they choose.

use std::time::Duration;

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use liminal_protocol::{CodecError, DEFAULT_MAX_FRAME_BYTES, Frame, FrameCodec};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::ClientError;

/// A TCP connection that sends and receives single frames.
pub struct RawConnection {
    framed: Framed<TcpStream, FrameCodec>,
}

impl RawConnection {
    /// Connects without sending anything.
    pub async fn connect(address: &str) -> Result<RawConnection, ClientError> {
        let stream = TcpStream::connect(address).await.map_err(|error| ClientError::Connect {
            address: address.to_owned(),
            reason: error.to_string(),
        })?;
        stream.set_nodelay(true).ok();
        Ok(RawConnection {
            framed: Framed::new(stream, FrameCodec::new(DEFAULT_MAX_FRAME_BYTES as usize * 64)),
        })
    }

    /// Sends one frame.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), ClientError> {
        self.framed
            .send(frame)
            .await
            .map_err(|error| ClientError::Closed(error.to_string()))
    }

    /// Writes raw bytes, for example a hand-made length prefix.
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.framed
            .get_mut()
            .write_all(bytes)
            .await
            .map_err(|error| ClientError::Closed(error.to_string()))
    }

    /// Receives the next frame; `Ok(None)` when the server closed the connection.
    pub async fn receive(&mut self, timeout: Duration) -> Result<Option<Frame>, ClientError> {
        match tokio::time::timeout(timeout, self.framed.next()).await {
            Err(_) => Err(ClientError::Timeout(timeout.as_millis() as u64)),
            Ok(None) => Ok(None),
            Ok(Some(Ok(frame))) => Ok(Some(frame)),
            Ok(Some(Err(CodecError::Io(error)))) if error.kind() == std::io::ErrorKind::ConnectionReset => Ok(None),
            Ok(Some(Err(error))) => Err(ClientError::Protocol(error.to_string())),
        }
    }

    /// Bytes received but not yet decoded.
    pub fn read_buffer(&self) -> &BytesMut {
        self.framed.read_buffer()
    }
}
