//! Frames: how messages travel on a connection.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of a
//! `postcard`-encoded message. A reader refuses a frame longer than its
//! maximum before reading it, so a malformed or hostile peer costs a
//! connection, never the node's memory: the payload buffer grows with the
//! bytes that arrive, not with the length announced. A frame once begun
//! must end within [`FRAME_DEADLINE`], so a peer that sends part of one and
//! stops is dropped instead of holding the reader (its socket needs a read
//! timeout for the reader to look at the clock).

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest frame a peer accepts unless told otherwise: 16 MiB.
pub const MAX_FRAME: usize = 16 << 20;

/// How long a frame may take from its first byte to its last.
pub const FRAME_DEADLINE: Duration = Duration::from_secs(5);

/// The payload is read in pieces of at most this many bytes, so what a
/// frame allocates follows what arrived.
const READ_CHUNK: usize = 64 << 10;

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
    /// The peer sent part of a frame and then nothing until the deadline.
    #[error("the peer stalled inside a frame ({got} of {size} bytes in {secs} s)")]
    Stalled {
        /// Bytes received (of the length prefix, if `size` is 4 and the
        /// prefix did not complete).
        got: usize,
        /// Bytes announced.
        size: usize,
        /// How long it was given.
        secs: u64,
    },
    /// The peer sent nothing, not even a ping, for this long while it had
    /// a trace running.
    #[error("the tracer was silent for {ms} ms while tracing; its trace was ended")]
    Silent {
        /// How long.
        ms: u64,
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

/// Reads one frame of at most `max` bytes and decodes it. Waiting for a
/// frame to begin is the caller's (a read timeout comes back as
/// [`FrameError::Io`], see [`FrameError::is_timeout`]); once begun, the
/// frame must end within [`FRAME_DEADLINE`].
pub fn read_frame<T: DeserializeOwned>(r: &mut impl Read, max: usize) -> Result<T, FrameError> {
    read_frame_with(r, max, Deadline::AfterFirstByte(FRAME_DEADLINE))
}

/// Reads one frame that must arrive whole, waiting included, by
/// `deadline`: the handshake's frames.
pub fn read_frame_by<T: DeserializeOwned>(
    r: &mut impl Read,
    max: usize,
    deadline: Instant,
) -> Result<T, FrameError> {
    read_frame_with(r, max, Deadline::At(deadline))
}

#[derive(Clone, Copy)]
enum Deadline {
    AfterFirstByte(Duration),
    At(Instant),
}

/// Reading against a deadline: a timeout past it is a stall.
struct Clock {
    deadline: Deadline,
    /// When the read began, and when its frame's first byte came.
    called: Instant,
    begun: Option<Instant>,
}

impl Clock {
    /// What a read that failed with `e` (`got` of `size` bytes in) means:
    /// go on waiting, the caller's wait (nothing of a frame yet, no fixed
    /// deadline), a stall, or a failure.
    fn check(&mut self, e: io::Error, got: usize, size: usize) -> Result<(), FrameError> {
        if !is_timeout(&e) {
            return Err(e.into());
        }
        let (over, took) = match self.deadline {
            Deadline::At(at) => (Instant::now() >= at, self.called.elapsed()),
            Deadline::AfterFirstByte(_) if got == 0 => return Err(e.into()),
            Deadline::AfterFirstByte(limit) => {
                let begun = self.begun.get_or_insert_with(Instant::now);
                (begun.elapsed() >= limit, limit)
            }
        };
        if over {
            let secs = took.as_secs_f64().round() as u64;
            return Err(FrameError::Stalled { got, size, secs });
        }
        Ok(())
    }
}

fn read_frame_with<T: DeserializeOwned>(
    r: &mut impl Read,
    max: usize,
    deadline: Deadline,
) -> Result<T, FrameError> {
    let mut clock = Clock {
        deadline,
        called: Instant::now(),
        begun: None,
    };
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Truncated { got, size: 4 }),
            Ok(n) => {
                clock.begun.get_or_insert_with(Instant::now);
                got += n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => clock.check(e, got, 4)?,
        }
    }
    let size = u32::from_be_bytes(len) as usize;
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    let mut payload = Vec::with_capacity(size.min(READ_CHUNK));
    let mut chunk = vec![0u8; size.min(READ_CHUNK)];
    while payload.len() < size {
        let want = (size - payload.len()).min(chunk.len());
        match r.read(&mut chunk[..want]) {
            Ok(0) => {
                return Err(FrameError::Truncated {
                    got: payload.len(),
                    size,
                });
            }
            Ok(n) => payload.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => clock.check(e, payload.len().max(1), size)?,
        }
    }
    decode(&payload)
}

/// Decodes one frame's payload: one whole message, nothing after it.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (message, rest) =
        postcard::take_from_bytes(payload).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!(
            "{} bytes after the message",
            rest.len()
        )));
    }
    Ok(message)
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

    /// A reader that hands out its bytes, then times out forever.
    struct Stalling<'a>(&'a [u8]);

    impl Read for Stalling<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                std::thread::sleep(Duration::from_millis(5));
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.0.len()).min(1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_frame_begun_and_left_is_a_stall_not_a_wait() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &"a frame that never ends").unwrap();
        for cut in [1, 3, 4, 9] {
            let mut r = Stalling(&buf[..cut]);
            let err = read_frame_with::<String>(
                &mut r,
                MAX_FRAME,
                Deadline::AfterFirstByte(Duration::from_millis(50)),
            )
            .unwrap_err();
            assert!(
                matches!(err, FrameError::Stalled { .. }),
                "cut at {cut}: {err}"
            );
        }
        // Nothing of a frame yet: the caller's wait, not a stall.
        let err = read_frame::<String>(&mut Stalling(&[]), MAX_FRAME).unwrap_err();
        assert!(err.is_timeout(), "{err}");
        // A fixed deadline counts the wait too.
        let by = Instant::now() + Duration::from_millis(50);
        let err = read_frame_by::<String>(&mut Stalling(&[]), MAX_FRAME, by).unwrap_err();
        assert!(matches!(err, FrameError::Stalled { got: 0, .. }), "{err}");
    }

    #[test]
    fn a_large_announced_frame_allocates_only_what_arrives() {
        // 16 MiB announced, 10 bytes sent: the read fails having kept 10.
        let mut bytes = (MAX_FRAME as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[7; 10]);
        let err = read_frame::<Vec<u8>>(&mut &bytes[..], MAX_FRAME).unwrap_err();
        assert!(
            matches!(err, FrameError::Truncated { got: 10, size } if size == MAX_FRAME),
            "{err}"
        );
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

        let mut trailing = Vec::new();
        write_frame(&mut trailing, &7u8).unwrap();
        trailing[3] += 1;
        trailing.push(0);
        let err = read_frame::<u8>(&mut &trailing[..], MAX_FRAME).unwrap_err();
        assert!(
            matches!(err, FrameError::Malformed(ref m) if m.contains("after")),
            "{err}"
        );

        let garbage = [0, 0, 0, 2, 0xff, 0xff];
        let err = read_frame::<String>(&mut &garbage[..], MAX_FRAME).unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)), "{err}");
    }
}
