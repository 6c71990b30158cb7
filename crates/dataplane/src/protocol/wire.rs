//! Just enough of protobuf's wire format to edit messages without decoding them (pure).
//!
//! A later occurrence of a singular field overrides an earlier one, and a later occurrence of a
//! message field merges into it: so appending `model_name` re-addresses a request, and appending
//! `config { name }` renames a ModelConfig answer, with the caller's tensor bytes never copied
//! into a decoded message.

use bytes::{BufMut, Bytes, BytesMut};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

fn varint(data: &[u8], mut position: usize) -> Result<(u64, usize), WireError> {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let Some(&byte) = data.get(position) else {
            return Err(WireError("truncated varint".into()));
        };
        if shift > 63 {
            return Err(WireError("overlong varint".into()));
        }
        position += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok((value, position));
        }
        shift += 7;
    }
}

fn put_varint(out: &mut BytesMut, mut value: u64) {
    while value > 0x7f {
        out.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// One top-level field: its number, where it starts, and (for length-delimited ones) its payload.
pub struct Field {
    pub number: u32,
    pub start: usize,
    pub end: usize,
    pub payload: Option<(usize, usize)>,
}

/// Every top-level field of `data`, in order; an error for anything malformed.
pub fn fields(data: &[u8]) -> Result<Vec<Field>, WireError> {
    let mut out = Vec::new();
    let mut position = 0;
    while position < data.len() {
        let start = position;
        let (tag, after_tag) = varint(data, position)?;
        let number =
            u32::try_from(tag >> 3).map_err(|_| WireError("field number out of range".into()))?;
        let (end, payload) = match tag & 7 {
            0 => (varint(data, after_tag)?.1, None),
            1 => (after_tag + 8, None),
            5 => (after_tag + 4, None),
            2 => {
                let (length, body) = varint(data, after_tag)?;
                let length =
                    usize::try_from(length).map_err(|_| WireError("length out of range".into()))?;
                let end = body
                    .checked_add(length)
                    .ok_or_else(|| WireError("length out of range".into()))?;
                (end, Some((body, end)))
            }
            other => {
                return Err(WireError(format!(
                    "unsupported wire type {other} at byte {start}"
                )))
            }
        };
        if end > data.len() {
            return Err(WireError(format!(
                "field {number} runs past the end of the message"
            )));
        }
        out.push(Field {
            number,
            start,
            end,
            payload,
        });
        position = end;
    }
    Ok(out)
}

/// Tag and length of a length-delimited field.
pub fn put_field_header(out: &mut BytesMut, number: u32, length: usize) {
    put_varint(out, u64::from(number) << 3 | 2);
    put_varint(out, length as u64);
}

pub fn string_field(number: u32, value: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(value.len() + 6);
    put_field_header(&mut out, number, value.len());
    out.put_slice(value);
    out
}

/// A message as it is sent: its bytes, and fields appended to them (a request re-addressed to
/// its variant), kept apart so that a large request is not copied to append a few bytes. A
/// reader takes the two as one message: of a field sent twice, the later wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub bytes: Bytes,
    pub appended: Bytes,
}

impl Message {
    pub fn len(&self) -> usize {
        self.bytes.len() + self.appended.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// In one buffer: its own when nothing was appended, else a copy.
    pub fn to_bytes(&self) -> Bytes {
        match self.appended.is_empty() {
            true => self.bytes.clone(),
            false => append(&self.bytes, &self.appended),
        }
    }
}

impl From<Bytes> for Message {
    fn from(bytes: Bytes) -> Message {
        Message {
            bytes,
            appended: Bytes::new(),
        }
    }
}

impl From<Vec<u8>> for Message {
    fn from(bytes: Vec<u8>) -> Message {
        Bytes::from(bytes).into()
    }
}

/// `message` with `suffix` appended (one copy).
pub fn append(message: &[u8], suffix: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + suffix.len());
    out.put_slice(message);
    out.put_slice(suffix);
    out.freeze()
}

/// `message` without any occurrence of field `number`.
pub fn strip(message: &[u8], number: u32) -> Result<BytesMut, WireError> {
    let mut out = BytesMut::with_capacity(message.len());
    for field in fields(message)? {
        if field.number != number {
            out.put_slice(&message[field.start..field.end]);
        }
    }
    Ok(out)
}

/// `message` with the string field `number` set to `value` where it stood (or at the end), its
/// other occurrences dropped; an empty `value` is left out, as an encoder leaves it out.
pub fn replace_string(message: &[u8], number: u32, value: &[u8]) -> Result<BytesMut, WireError> {
    let mut out = BytesMut::with_capacity(message.len() + value.len() + 6);
    let mut placed = false;
    for field in fields(message)? {
        if field.number != number {
            out.put_slice(&message[field.start..field.end]);
            continue;
        }
        if !placed && !value.is_empty() {
            out.put_slice(&string_field(number, value));
        }
        placed = true;
    }
    if !placed && !value.is_empty() {
        out.put_slice(&string_field(number, value));
    }
    Ok(out)
}

/// The string value of field `number` (the last occurrence wins), or "".
pub fn string_of(message: &[u8], number: u32) -> Result<&[u8], WireError> {
    let mut value: &[u8] = b"";
    for field in fields(message)? {
        if field.number == number {
            if let Some((start, end)) = field.payload {
                value = &message[start..end];
            }
        }
    }
    Ok(value)
}

/// The varint value of field `number` (the last occurrence wins), or 0.
pub fn uint_of(message: &[u8], number: u32) -> Result<u64, WireError> {
    let mut value = 0;
    for field in fields(message)? {
        if field.number == number && field.payload.is_none() {
            let (_, after_tag) = varint(message, field.start)?;
            value = varint(message, after_tag)?.0;
        }
    }
    Ok(value)
}

/// The message field `number` as one message: its occurrences' payloads, merged by concatenation.
pub fn message_of(message: &[u8], number: u32) -> Result<Vec<u8>, WireError> {
    let mut merged = Vec::new();
    for field in fields(message)? {
        if let (true, Some((start, end))) = (field.number == number, field.payload) {
            merged.extend_from_slice(&message[start..end]);
        }
    }
    Ok(merged)
}

/// A varint field.
pub fn uint_field(out: &mut BytesMut, number: u32, value: u64) {
    put_varint(out, u64::from(number) << 3);
    put_varint(out, value);
}

/// A message field holding `payload`.
pub fn message_field(out: &mut BytesMut, number: u32, payload: &[u8]) {
    put_field_header(out, number, payload.len());
    out.put_slice(payload);
}

/// Answers of several servers merged: protobuf concatenation merges (the first answer listed
/// wins on scalars, being last), then entries of the repeated field `entries` that share a
/// (name = 1, version = 2) key are kept once: the first position, the last value.
pub fn merge_answers(answers: &[Bytes], entries: Option<u32>) -> Result<Bytes, WireError> {
    let mut merged = BytesMut::new();
    for answer in answers.iter().rev() {
        merged.put_slice(answer);
    }
    let Some(entries) = entries else {
        return Ok(merged.freeze());
    };
    let all = fields(&merged)?;
    type Key = (Vec<u8>, Vec<u8>); // an entry's name and version
    let mut keyed: Vec<(Key, (usize, usize))> = Vec::new();
    let mut out = BytesMut::with_capacity(merged.len());
    for field in &all {
        if field.number != entries {
            out.put_slice(&merged[field.start..field.end]);
            continue;
        }
        let Some((start, end)) = field.payload else {
            continue;
        };
        let entry = &merged[start..end];
        let key = (string_of(entry, 1)?.to_vec(), string_of(entry, 2)?.to_vec());
        match keyed.iter_mut().find(|(k, _)| *k == key) {
            Some((_, span)) => *span = (field.start, field.end),
            None => keyed.push((key, (field.start, field.end))),
        }
    }
    for (_, (start, end)) in keyed {
        out.put_slice(&merged[start..end]);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_string_takes_the_place_of_the_first_and_drops_the_rest() {
        let mut message = string_field(1, b"m");
        message.extend_from_slice(&string_field(3, b"17"));
        message.extend_from_slice(&string_field(5, b"out"));
        message.extend_from_slice(&string_field(3, b"18"));
        let mut expected = string_field(1, b"m");
        expected.extend_from_slice(&string_field(3, b"mine"));
        expected.extend_from_slice(&string_field(5, b"out"));
        assert_eq!(replace_string(&message, 3, b"mine").unwrap(), expected);
        let mut without = string_field(1, b"m");
        without.extend_from_slice(&string_field(5, b"out"));
        assert_eq!(replace_string(&message, 3, b"").unwrap(), without);
        let mut appended = without.clone();
        appended.extend_from_slice(&string_field(3, b"x"));
        assert_eq!(replace_string(&without, 3, b"x").unwrap(), appended);
    }

    #[test]
    fn appended_strings_override() {
        let message = string_field(1, b"public");
        let renamed = append(&message, &string_field(1, b"upstream"));
        assert_eq!(string_of(&renamed, 1).unwrap(), b"upstream");
        assert_eq!(strip(&renamed, 1).unwrap().len(), 0);
    }

    #[test]
    fn merged_answers_keep_each_model_once() {
        let entry = |name: &[u8], version: &[u8], state: &[u8]| {
            let mut inner = string_field(1, name);
            inner.extend_from_slice(&string_field(2, version));
            inner.extend_from_slice(&string_field(3, state));
            string_field(1, &inner).freeze()
        };
        let a = [entry(b"m", b"1", b"READY"), entry(b"n", b"1", b"READY")].concat();
        let b = [entry(b"m", b"1", b"UNAVAILABLE")].concat();
        let merged = merge_answers(&[Bytes::from(a), Bytes::from(b)], Some(1)).unwrap();
        let entries: Vec<_> = fields(&merged).unwrap().into_iter().collect();
        assert_eq!(entries.len(), 2);
        let first = entries[0].payload.unwrap();
        assert_eq!(string_of(&merged[first.0..first.1], 3).unwrap(), b"READY");
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            &b"\x0a\x05ab"[..],
            b"\x0b",
            b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        ] {
            assert!(fields(bad).is_err(), "{bad:?}");
        }
    }
}
