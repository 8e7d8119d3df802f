//! What must hold for any input, checked by the fuzz targets and, without
//! the fuzzer, by `tests/fuzz_corpus_replays.rs` over the committed corpus
//! and every crash ever found. Each check panics when its invariant fails.

use nodetrace_protocol::frame::{MAX_FRAME, encode_frame, read_frame};
use nodetrace_protocol::handshake::{self, Side};
use nodetrace_protocol::{NodeMessage, Pattern, TracerMessage};

/// A frame a tracer sends: decoding never panics, and a decoded message
/// re-encodes to a frame that decodes to a message encoding to the same
/// bytes. (Bytes, not values, are compared: a figure may be a NaN, which
/// is not equal to itself.)
pub fn frame_from_tracer(bytes: &[u8]) {
    round_trips!(TracerMessage, bytes);
}

/// A frame a node sends: the same.
pub fn frame_from_node(bytes: &[u8]) {
    round_trips!(NodeMessage, bytes);
}

/// Decodes `bytes` as a `$message` frame; if it is one, checks it goes
/// there and back unchanged.
macro_rules! round_trips {
    ($message:ty, $bytes:expr) => {
        if let Ok(message) = read_frame::<$message>(&mut &$bytes[..], MAX_FRAME) {
            let mut again = Vec::new();
            encode_frame(&message, &mut again).expect("a decoded message encodes");
            let back: $message = read_frame(&mut &again[..], MAX_FRAME).expect("it decodes");
            let mut third = Vec::new();
            encode_frame(&back, &mut third).expect("it encodes again");
            assert_eq!(third, again, "the message changed on its way back");
        }
    };
}
use round_trips;

/// The handshake: any cookie and challenges, and any proof, verify without
/// panicking; the right proof verifies, and a changed one does not.
pub fn handshake(bytes: &[u8]) {
    let (cookie, rest) = bytes.split_at(bytes.len().min(16));
    let cookie = String::from_utf8_lossy(cookie);
    let take = |at: usize| {
        let mut c = [0u8; 32];
        for (i, b) in rest.iter().skip(at).take(32).enumerate() {
            c[i] = *b;
        }
        c
    };
    let (ours, theirs) = (take(0), take(32));
    let proof = handshake::prove(&cookie, Side::Tracer, &ours, &theirs);
    assert!(handshake::verify(
        &cookie,
        Side::Tracer,
        &ours,
        &theirs,
        &proof
    ));
    assert!(!handshake::verify(
        &cookie,
        Side::Node,
        &ours,
        &theirs,
        &proof
    ));
    let forged = take(64);
    let _ = handshake::verify(&cookie, Side::Tracer, &ours, &theirs, &forged);
}

/// A pattern: parsing never panics, and a parsed pattern prints back to a
/// pattern equal to it.
pub fn pattern(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(pattern) = text.parse::<Pattern>() {
        let printed = pattern.to_string();
        let again: Pattern = printed
            .parse()
            .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}, which fails: {e}"));
        assert_eq!(again, pattern, "{text:?} printed as {printed:?}");
    }
}

/// The CLI's `--duration` and `--rate`: parsing never panics, and what
/// parses is positive.
pub fn duration_and_rate(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(ms) = nodetrace_tracer::spec::parse_duration(text) {
        assert!(ms > 0, "{text:?} is a duration of 0 ms");
    }
    if let Ok(rate) = nodetrace_tracer::spec::parse_rate(text) {
        assert!(
            rate.events > 0 && rate.per_ms > 0,
            "{text:?} gives {rate:?}"
        );
    }
}
