//! A byte-level guard on the client→relay half of a websocket: nostr-relay-builder hands
//! the upgraded stream to tungstenite with its defaults (16 MiB frames, 64 MiB messages),
//! and offers no way to pass a `WebSocketConfig`. Without a cap a client can make the relay
//! buffer, parse and signature-check megabytes before the write policy's size rule runs.
//!
//! [`FrameGuard`] reads each frame header (RFC 6455 §5.2) as the bytes go by and fails the
//! read as soon as a frame, or the data frames of one fragmented message, announce more
//! than the limit: the payload is never buffered, the session ends and the socket closes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Wraps an upgraded websocket stream (server side) with a size cap on incoming messages.
#[derive(Debug)]
pub struct FrameGuard<S> {
    inner: S,
    scan: FrameScanner,
}

impl<S> FrameGuard<S> {
    /// Caps every incoming message (all its frames together) at `max_message` bytes.
    pub fn new(inner: S, max_message: u64) -> Self {
        Self {
            inner,
            scan: FrameScanner::new(max_message),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Err(too_big) = this.scan.feed(&buf.filled()[before..]) {
                    // Hide the bytes from tungstenite: nothing of this message is parsed.
                    buf.set_filled(before);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        too_big.to_string(),
                    )));
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FrameGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A message (or one frame) over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("websocket message of at least {announced} bytes exceeds the limit of {limit}")]
pub struct TooBig {
    /// Bytes announced so far for the message.
    pub announced: u64,
    /// The limit.
    pub limit: u64,
}

/// Follows frame boundaries in a byte stream without keeping payloads.
#[derive(Debug)]
struct FrameScanner {
    limit: u64,
    /// Header bytes of the frame being read (at most 14).
    header: Vec<u8>,
    /// Payload bytes still to skip in the current frame.
    payload_left: u64,
    /// Data bytes announced for the message being assembled (fragments add up).
    message: u64,
}

impl FrameScanner {
    fn new(limit: u64) -> Self {
        Self {
            limit,
            header: Vec::with_capacity(14),
            payload_left: 0,
            message: 0,
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), TooBig> {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skip = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.payload_left -= skip as u64;
                bytes = &bytes[skip..];
                continue;
            }
            self.header.push(bytes[0]);
            bytes = &bytes[1..];
            let Some((fin, opcode, len)) = parse_header(&self.header) else {
                continue;
            };
            self.header.clear();
            let control = opcode & 0x8 != 0;
            if control {
                // Control frames are at most 125 bytes (tungstenite enforces it) and sit
                // between fragments without ending the message.
                if len > 125 {
                    return Err(TooBig {
                        announced: len,
                        limit: 125,
                    });
                }
            } else {
                self.message = self.message.saturating_add(len);
                if self.message > self.limit {
                    return Err(TooBig {
                        announced: self.message,
                        limit: self.limit,
                    });
                }
                if fin {
                    self.message = 0;
                }
            }
            self.payload_left = len;
        }
        Ok(())
    }
}

/// (FIN, opcode, payload length) once `header` holds a whole frame header.
fn parse_header(header: &[u8]) -> Option<(bool, u8, u64)> {
    let (&first, rest) = header.split_first()?;
    let (&second, rest) = rest.split_first()?;
    let masked = second & 0x80 != 0;
    let mask_len = if masked { 4 } else { 0 };
    let (len, extended) = match second & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?)),
            2,
        ),
        127 => (u64::from_be_bytes(rest.get(..8)?.try_into().ok()?), 8),
        short => (u64::from(short), 0),
    };
    if rest.len() < extended + mask_len {
        return None;
    }
    Some((first & 0x80 != 0, first & 0x0f, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame header for `len` bytes.
    fn header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
        let mut out = vec![u8::from(fin) << 7 | opcode];
        match len {
            0..=125 => out.push(0x80 | len as u8),
            126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(0x80 | 127);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        out.extend_from_slice(&[1, 2, 3, 4]);
        out
    }

    fn frame(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        let mut out = header(fin, opcode, len as u64);
        out.resize(out.len() + len, b'x');
        out
    }

    #[test]
    fn frames_under_the_limit_pass_in_any_split() {
        let mut stream = frame(true, 1, 100);
        stream.extend(frame(true, 1, 1_000));
        stream.extend(frame(true, 9, 4));
        stream.extend(frame(true, 1, 70_000));
        for chunk in [1, 3, 7, 4096, stream.len()] {
            let mut scan = FrameScanner::new(70_000);
            for piece in stream.chunks(chunk) {
                assert_eq!(scan.feed(piece), Ok(()), "chunk size {chunk}");
            }
        }
    }

    #[test]
    fn a_huge_frame_is_refused_from_its_header() {
        let mut scan = FrameScanner::new(70_000);
        let huge = header(true, 1, 16 << 20);
        assert!(scan.feed(&huge).is_err());
    }

    #[test]
    fn fragments_add_up_and_pings_between_them_do_not() {
        let mut scan = FrameScanner::new(1_000);
        assert_eq!(scan.feed(&frame(false, 1, 600)), Ok(()));
        assert_eq!(scan.feed(&frame(true, 9, 10)), Ok(()));
        assert!(scan.feed(&frame(false, 0, 600)).is_err());

        let mut scan = FrameScanner::new(1_000);
        assert_eq!(scan.feed(&frame(false, 1, 600)), Ok(()));
        assert_eq!(scan.feed(&frame(true, 0, 400)), Ok(()));
        // FIN ended the message: the next one starts from zero.
        assert_eq!(scan.feed(&frame(true, 1, 900)), Ok(()));
    }
}
