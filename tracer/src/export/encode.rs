//! A protobuf writer over one reused buffer, for Perfetto's packets,
//! which are encoded field by field rather than built as message values
//! per event (the throughput; the tests decode every file with
//! Perfetto's published protos).
//!
//! Fields are appended in the order they are written; a nested message
//! is [`Encoder::begin`] and [`Encoder::end`]: one byte is reserved for
//! its length and written at its end, and in the less common case that it
//! is 128 bytes or longer the bytes the length needs are inserted. The
//! encoding is protobuf's (varints, little-endian fixed widths,
//! length-delimited strings and messages), each length minimal, so a
//! message written in field-number order is byte for byte what prost
//! writes for it.

/// Protobuf's wire types.
const VARINT: u32 = 0;
const I64: u32 = 1;
const LEN: u32 = 2;

/// Appends protobuf fields to a buffer; see the module.
#[derive(Debug, Default)]
pub(crate) struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// Forgets what was written, keeping the buffer.
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
    }

    /// What was written.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    #[inline]
    fn raw_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    #[inline]
    fn key(&mut self, field: u32, wire: u32) {
        self.raw_varint(u64::from(field << 3 | wire));
    }

    /// A varint field: `uint32`, `uint64`, an enum, or a non-negative
    /// `int32`/`int64`.
    #[inline]
    pub(crate) fn varint(&mut self, field: u32, v: u64) {
        self.key(field, VARINT);
        self.raw_varint(v);
    }

    /// A `fixed64` field.
    #[inline]
    pub(crate) fn fixed64(&mut self, field: u32, v: u64) {
        self.key(field, I64);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A `string` or `bytes` field, or a message already encoded.
    #[inline]
    pub(crate) fn bytes_field(&mut self, field: u32, b: &[u8]) {
        self.key(field, LEN);
        self.raw_varint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    /// A `string` field.
    #[inline]
    pub(crate) fn string(&mut self, field: u32, s: &str) {
        self.bytes_field(field, s.as_bytes());
    }

    /// Starts nested message `field`; [`Encoder::end`] closes it.
    #[inline]
    pub(crate) fn begin(&mut self, field: u32) -> usize {
        self.key(field, LEN);
        self.buf.push(0);
        self.buf.len()
    }

    /// Closes the message begun at `start`: writes its length.
    #[inline]
    pub(crate) fn end(&mut self, start: usize) {
        let len = self.buf.len() - start;
        if len < 0x80 {
            self.buf[start - 1] = len as u8;
            return;
        }
        self.widen(start, len);
    }

    #[cold]
    fn widen(&mut self, start: usize, len: usize) {
        let mut bytes = [0u8; 10];
        let (mut v, mut n) = (len as u64, 0);
        while v >= 0x80 {
            bytes[n] = v as u8 | 0x80;
            v >>= 7;
            n += 1;
        }
        bytes[n] = v as u8;
        self.buf[start - 1] = bytes[0];
        // The message moves up by the bytes the length takes beyond one.
        let end = self.buf.len();
        self.buf.resize(end + n, 0);
        self.buf.copy_within(start..end, start + n);
        self.buf[start..start + n].copy_from_slice(&bytes[1..=n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// A message of the shapes written, as prost encodes it.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Outer {
        #[prost(uint64, tag = "1")]
        n: u64,
        #[prost(message, repeated, tag = "2")]
        inner: Vec<Inner>,
        #[prost(fixed64, tag = "3")]
        at: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Inner {
        #[prost(string, tag = "1")]
        text: String,
    }

    #[test]
    fn messages_of_every_length_are_what_prost_writes() {
        for len in [0, 1, 100, 127, 128, 300, 16_383, 16_384, 70_000] {
            let text = "z".repeat(len);
            let mut enc = Encoder::default();
            enc.varint(1, 1 << 35);
            for _ in 0..2 {
                let i = enc.begin(2);
                if !text.is_empty() {
                    enc.string(1, &text);
                }
                enc.end(i);
            }
            enc.fixed64(3, 7);
            let expected = Outer {
                n: 1 << 35,
                inner: vec![Inner { text: text.clone() }; 2],
                at: 7,
            };
            assert_eq!(enc.bytes(), expected.encode_to_vec(), "{len}");
        }
    }
}
