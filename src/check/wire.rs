//! Protobuf encoding, written directly: the `CheckResponse` is built as bytes, as the
//! `CheckRequest` is read from them (`check/request.rs`), rather than as prost's message structs.
//! Building those structs took an allocation for every header name and value, a hash map for the
//! decision metadata, and two walks over the whole tree (`encoded_len`, then `encode`): a ninth
//! of an allowed check's instructions (BENCHMARKS.md).
//!
//! Fields are written in the order they are given; a nested message is written in place and its
//! length put in front of it once it is known. Every decoder (prost in the tests, Envoy's protobuf)
//! reads what this writes: it is the standard wire format, with minimal varints.

use std::fmt;

/// Length-delimited: strings, bytes and nested messages.
const LEN: u8 = 2;
/// Varints: integers, booleans and enums.
const VARINT: u8 = 0;
/// Eight bytes, little-endian: doubles.
const I64: u8 = 1;

/// An encoded message, growing as fields are written.
#[derive(Default)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    /// A writer whose bytes start with `prefix` (the gRPC length prefix, filled in by the caller),
    /// with room for `capacity` bytes before it grows.
    pub fn after(prefix: &[u8], capacity: usize) -> Self {
        let mut bytes = Vec::with_capacity(capacity);
        bytes.extend_from_slice(prefix);
        Self { bytes }
    }

    /// What was written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.bytes.push(value as u8 | 0x80);
            value >>= 7;
        }
        self.bytes.push(value as u8);
    }

    fn key(&mut self, field: u32, wire_type: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire_type));
    }

    /// An `int32` or enum field; nothing for zero, its default.
    pub fn int32(&mut self, field: u32, value: i32) {
        if value != 0 {
            self.key(field, VARINT);
            // Negative values take ten bytes, sign-extended, as protobuf wants.
            self.varint(i64::from(value) as u64);
        }
    }

    /// A `double` field, written even when zero (inside a `Value`'s oneof, zero is a value).
    pub fn double(&mut self, field: u32, value: f64) {
        self.key(field, I64);
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    /// A `string` field.
    pub fn string(&mut self, field: u32, value: &str) {
        self.key(field, LEN);
        self.varint(value.len() as u64);
        self.bytes.extend_from_slice(value.as_bytes());
    }

    /// A `string` field holding `value` in decimal digits, without `fmt`'s machinery (most of an
    /// answer's strings are numbers).
    pub fn decimal(&mut self, field: u32, value: u64) {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        let mut rest = value;
        loop {
            start -= 1;
            digits[start] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        self.key(field, LEN);
        self.varint((digits.len() - start) as u64);
        self.bytes.extend_from_slice(&digits[start..]);
    }

    /// A `string` field whose text is formatted in place.
    pub fn display(&mut self, field: u32, value: impl fmt::Display) {
        self.message(field, |w| {
            use fmt::Write as _;
            // Writing to a Vec cannot fail.
            let _ = write!(w, "{value}");
        });
    }

    /// A nested message field (also a `string` built in pieces), written by `body`; present even
    /// when empty.
    pub fn message(&mut self, field: u32, body: impl FnOnce(&mut Self)) {
        self.key(field, LEN);
        let start = self.bytes.len();
        // One byte of length is room for 127 bytes of body: most fit, longer ones move.
        self.bytes.push(0);
        body(self);
        let len = self.bytes.len() - start - 1;
        if len < 0x80 {
            self.bytes[start] = len as u8;
            return;
        }
        // The length is written after the body, turned to its front, and the byte kept for a
        // short length is dropped.
        let end = self.bytes.len();
        self.varint(len as u64);
        let written = self.bytes.len() - end;
        self.bytes[start + 1..].rotate_right(written);
        self.bytes.remove(start);
    }
}

impl fmt::Write for Writer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.bytes.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Writer;
    use envoy_types::pb::google::protobuf::value::Kind;
    use envoy_types::pb::google::protobuf::{Struct, Value};
    use envoy_types::pb::google::rpc::Status;
    use proptest::prelude::*;
    use prost::Message;

    proptest! {
        /// Every length and value prost decodes back as written, nested messages included,
        /// lengths of one byte and of several alike.
        #[test]
        fn prost_reads_what_is_written(
            code in any::<i32>(),
            message in ".{0,300}",
            number in any::<f64>(),
            name in "[a-z_]{1,20}",
        ) {
            let mut w = Writer::default();
            w.int32(1, code);
            // `details`, a repeated `Any` whose `type_url` is 1.
            w.message(3, |w| w.string(1, &message));
            let status = Status::decode(&w.into_bytes()[..]).unwrap();
            prop_assert_eq!(status.code, code);
            prop_assert_eq!(status.message, "");
            prop_assert_eq!(status.details.len(), 1);
            prop_assert_eq!(&status.details[0].type_url, &message);

            let mut w = Writer::default();
            w.string(2, &message);
            let status = Status::decode(&w.into_bytes()[..]).unwrap();
            prop_assert_eq!(&status.message, &message);

            let mut w = Writer::default();
            for (key, kind) in [("text", 3), ("number", 2)] {
                w.message(1, |w| {
                    w.display(1, format_args!("{name}_{key}"));
                    w.message(2, |w| match kind {
                        3 => w.string(3, &message),
                        _ => w.double(2, number),
                    });
                });
            }
            let fields = Struct::decode(&w.into_bytes()[..]).unwrap().fields;
            prop_assert_eq!(fields.len(), 2);
            prop_assert_eq!(
                &fields[&format!("{name}_text")],
                &Value { kind: Some(Kind::StringValue(message.clone())) }
            );
            let Some(Kind::NumberValue(decoded)) = fields[&format!("{name}_number")].kind else {
                panic!("not a number");
            };
            prop_assert_eq!(decoded.to_bits(), number.to_bits());
        }
    }

    proptest! {
        #[test]
        fn a_decimal_is_the_number_as_rust_prints_it(value in any::<u64>()) {
            let mut w = Writer::default();
            w.decimal(2, value);
            let status = Status::decode(&w.into_bytes()[..]).unwrap();
            prop_assert_eq!(status.message, value.to_string());
        }
    }

    #[test]
    fn a_writer_after_a_prefix_keeps_it_and_an_empty_message_is_present() {
        let mut w = Writer::after(&[9, 9], 4);
        w.message(1, |_| {});
        w.int32(2, 0);
        assert_eq!(w.into_bytes(), [9, 9, 0x0a, 0]);
    }
}
