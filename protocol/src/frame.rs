//! Frames: how messages travel on a connection.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of a
//! `postcard`-encoded message. A reader refuses a frame longer than its
//! maximum before reading it, so a malformed or hostile peer costs a
//! connection, never the node's memory.

use std::io::{self, Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest frame a peer accepts unless told otherwise: 16 MiB.
pub const MAX_FRAME: usize = 16 << 20;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    #[error("the connection was closed")]
    Closed,
    /// The length prefix announces more than the limit.
    #[error("a frame of {size} bytes is over the {max}-byte limit")]
    TooLarge {
        /// Announced size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The connection ended inside a frame.
    #[error("the connection ended inside a frame ({got} of {size} bytes)")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes announced.
        size: usize,
    },
    /// The bytes are not a message this side knows.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The socket failed, or a read timed out.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl FrameError {
    /// Whether this is a read timeout rather than a failure.
    pub fn is_timeout(&self) -> bool {
        matches!(self, FrameError::Io(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
    }
}

/// Encodes `message` as one frame into `buf` (appending).
pub fn encode_frame<T: Serialize>(message: &T, buf: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    let mut out = std::mem::take(buf);
    out = postcard::to_extend(message, out).map_err(|e| FrameError::Malformed(e.to_string()))?;
    *buf = out;
    let len = u32::try_from(buf.len() - start - 4).map_err(|_| FrameError::TooLarge {
        size: buf.len() - start - 4,
        max: u32::MAX as usize,
    })?;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Writes `message` as one frame.
pub fn write_frame<T: Serialize>(w: &mut impl Write, message: &T) -> Result<(), FrameError> {
    let mut buf = Vec::new();
    encode_frame(message, &mut buf)?;
    w.write_all(&buf)?;
    Ok(())
}

/// Reads one frame of at most `max` bytes and decodes it.
pub fn read_frame<T: DeserializeOwned>(r: &mut impl Read, max: usize) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Truncated { got, size: 4 }),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if got > 0 && is_timeout(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let size = u32::from_be_bytes(len) as usize;
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    let mut payload = vec![0u8; size];
    let mut got = 0;
    while got < size {
        match r.read(&mut payload[got..]) {
            Ok(0) => return Err(FrameError::Truncated { got, size }),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted || is_timeout(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    decode(&payload)
}

/// Decodes one frame's payload.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    postcard::from_bytes(payload).map_err(|e| FrameError::Malformed(e.to_string()))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &("hello", 42u32)).unwrap();
        write_frame(&mut buf, &vec![1u8, 2, 3]).unwrap();
        let mut r = &buf[..];
        assert_eq!(
            read_frame::<(String, u32)>(&mut r, MAX_FRAME).unwrap(),
            ("hello".into(), 42)
        );
        assert_eq!(read_frame::<Vec<u8>>(&mut r, MAX_FRAME).unwrap(), [1, 2, 3]);
        assert!(matches!(
            read_frame::<Vec<u8>>(&mut r, MAX_FRAME),
            Err(FrameError::Closed)
        ));
    }

    /// Random bytes, cut anywhere, never panic the decoder: every outcome
    /// is a message or an error.
    #[test]
    fn random_bytes_never_panic_the_decoder() {
        use crate::{NodeMessage, TracerMessage};
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if next() % 2 == 0 && bytes.len() >= 4 {
                let body = (bytes.len() - 4) as u32;
                bytes[..4].copy_from_slice(&body.to_be_bytes());
            }
            let _ = read_frame::<TracerMessage>(&mut &bytes[..], 1 << 16);
            let _ = read_frame::<NodeMessage>(&mut &bytes[..], 1 << 16);
        }
    }

    #[test]
    fn oversized_truncated_and_malformed_frames_are_refused() {
        let big = (MAX_FRAME as u32 + 1).to_be_bytes();
        let err = read_frame::<u8>(&mut &big[..], MAX_FRAME).unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { size, .. } if size == MAX_FRAME + 1),
            "{err}"
        );

        let mut buf = Vec::new();
        write_frame(&mut buf, &"a long enough string").unwrap();
        let cut = &buf[..buf.len() - 3];
        let err = read_frame::<String>(&mut &cut[..], MAX_FRAME).unwrap_err();
        assert!(matches!(err, FrameError::Truncated { .. }), "{err}");
        let err = read_frame::<String>(&mut &buf[..2], MAX_FRAME).unwrap_err();
        assert!(
            matches!(err, FrameError::Truncated { got: 2, size: 4 }),
            "{err}"
        );

        let garbage = [0, 0, 0, 2, 0xff, 0xff];
        let err = read_frame::<String>(&mut &garbage[..], MAX_FRAME).unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)), "{err}");
    }
}
