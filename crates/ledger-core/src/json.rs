//! A strict I-JSON (RFC 7493) reader and the two canonical forms the ledger needs.
//!
//! Why by hand: SPEC §1 refuses inputs that common JSON libraries accept silently
//! (repeated keys, noncharacters, nesting beyond 128 levels exactly, numbers beyond the
//! double range) and compares duplicates "by value" (`1` equals `1.0`). This module
//! parses one input into a [`Json`] tree, keeping every number's text so that nothing is
//! lost, and offers:
//! - [`Json::content_digest`]: a SHA-256 of a canonical form in which JSON-equal inputs
//!   (key order, whitespace, escapes, number spelling) coincide — the duplicate check;
//! - [`write_jcs`]: RFC 8785 canonical JSON of a `serde_json::Value`, for the digest.
//!
//! It does not map JSON to domain types; `intake` does that.

use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fmt;

/// Deepest nesting of arrays and objects that an input may have (SPEC §1).
pub const MAX_DEPTH: usize = 128;

/// A parsed JSON value, borrowing from the input where it can (strings without escapes,
/// numbers). Objects keep their members in input order (keys are unique).
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    /// The number exactly as written; its grammar and range were checked.
    Num(&'a str),
    Str(Cow<'a, str>),
    Arr(Vec<Json<'a>>),
    Obj(Vec<(Cow<'a, str>, Json<'a>)>),
}

/// Why an input is not I-JSON. `offset` is the byte where the problem was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub offset: usize,
    pub reason: String,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.reason, self.offset)
    }
}

impl<'a> Json<'a> {
    /// The member `key` of an object, or `None` (also for non-objects).
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Obj(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A short name of the value's JSON type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "boolean",
            Json::Num(_) => "number",
            Json::Str(_) => "string",
            Json::Arr(_) => "array",
            Json::Obj(_) => "object",
        }
    }

    /// SHA-256 over a canonical form: object members sorted by key, numbers reduced to
    /// (sign, significant digits, exponent), strings as their decoded scalar values.
    /// Two inputs have the same digest exactly when they are JSON-equal in SPEC §1's sense.
    pub fn content_digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        let mut buf = Vec::with_capacity(512);
        self.write_canonical(&mut buf);
        hasher.update(&buf);
        hasher.finalize().into()
    }

    fn write_canonical(&self, out: &mut Vec<u8>) {
        match self {
            Json::Null => out.push(b'n'),
            Json::Bool(true) => out.push(b't'),
            Json::Bool(false) => out.push(b'f'),
            Json::Num(text) => {
                out.push(b'#');
                canonical_number(text, out);
                out.push(b';');
            }
            Json::Str(s) => write_len_prefixed(s, out),
            Json::Arr(items) => {
                out.push(b'[');
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for item in items {
                    item.write_canonical(out);
                }
            }
            Json::Obj(members) => {
                out.push(b'{');
                out.extend_from_slice(&(members.len() as u64).to_le_bytes());
                let mut sorted: Vec<&(Cow<'a, str>, Json<'a>)> = members.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                for (k, v) in sorted {
                    write_len_prefixed(k, out);
                    v.write_canonical(out);
                }
            }
        }
    }
}

fn write_len_prefixed(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Writes a number's value as `sign digits e exponent`, the same for every spelling of
/// one value (`1`, `1.0`, `10e-1`, `-0` and `0` all agree).
fn canonical_number(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    let (negative, rest) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        _ => (false, bytes),
    };
    let mut digits: Vec<u8> = Vec::with_capacity(rest.len());
    let mut exponent: i64 = 0;
    let mut i = 0;
    while i < rest.len() && rest[i].is_ascii_digit() {
        digits.push(rest[i]);
        i += 1;
    }
    if i < rest.len() && rest[i] == b'.' {
        i += 1;
        while i < rest.len() && rest[i].is_ascii_digit() {
            digits.push(rest[i]);
            exponent -= 1;
            i += 1;
        }
    }
    if i < rest.len() && (rest[i] == b'e' || rest[i] == b'E') {
        i += 1;
        let exp_text = std::str::from_utf8(&rest[i..]).unwrap_or("0");
        // Exponents beyond i64 cannot be in range for a double unless the digits are all
        // zero; saturate so that such inputs still compare consistently.
        let e: i64 = exp_text
            .trim_start_matches('+')
            .parse()
            .unwrap_or_else(|_| {
                if exp_text.starts_with('-') {
                    i64::MIN / 2
                } else {
                    i64::MAX / 2
                }
            });
        exponent = exponent.saturating_add(e);
    }
    let first_nonzero = digits.iter().position(|&d| d != b'0');
    let Some(start) = first_nonzero else {
        out.push(b'0');
        return;
    };
    let mut end = digits.len();
    while end > start && digits[end - 1] == b'0' {
        end -= 1;
        exponent = exponent.saturating_add(1);
    }
    out.push(if negative { b'-' } else { b'+' });
    out.extend_from_slice(&digits[start..end]);
    out.push(b'e');
    out.extend_from_slice(exponent.to_string().as_bytes());
}

/// Parses one complete input as I-JSON.
pub fn parse(input: &[u8]) -> Result<Json<'_>, JsonError> {
    if input.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Err(JsonError {
            offset: 0,
            reason: "a byte-order mark is not allowed".into(),
        });
    }
    let text = std::str::from_utf8(input).map_err(|e| JsonError {
        offset: e.valid_up_to(),
        reason: "invalid UTF-8".into(),
    })?;
    let mut p = Parser {
        bytes: input,
        text,
        pos: 0,
    };
    p.skip_ws();
    let value = p.value(0)?;
    p.skip_ws();
    if p.pos != input.len() {
        return Err(p.err("unexpected data after the JSON value"));
    }
    Ok(value)
}

struct Parser<'a> {
    bytes: &'a [u8],
    /// The same input as text: it was checked to be UTF-8 once, up front.
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, reason: &str) -> JsonError {
        JsonError {
            offset: self.pos,
            reason: reason.to_string(),
        }
    }

    fn skip_ws(&mut self) {
        while let Some(&b) = self.bytes.get(self.pos) {
            if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn expect_literal(&mut self, lit: &[u8], value: Json<'a>) -> Result<Json<'a>, JsonError> {
        if self.bytes[self.pos..].starts_with(lit) {
            self.pos += lit.len();
            Ok(value)
        } else {
            Err(self.err("not JSON: unknown literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json<'a>, JsonError> {
        match self.peek() {
            None => Err(self.err("unexpected end of input")),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b't') => self.expect_literal(b"true", Json::Bool(true)),
            Some(b'f') => self.expect_literal(b"false", Json::Bool(false)),
            Some(b'n') => self.expect_literal(b"null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("not JSON: unexpected character")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json<'a>, JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting deeper than 128 levels"));
        }
        self.pos += 1;
        let mut members: Vec<(Cow<'a, str>, Json<'a>)> = Vec::with_capacity(8);
        // Small objects check repeated keys by scanning; big ones use a set.
        let mut seen: Option<std::collections::HashSet<Cow<'a, str>>> = None;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Json::Obj(members));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected an object key"));
            }
            let key_pos = self.pos;
            let key = self.string()?;
            let repeated = match &mut seen {
                Some(set) => !set.insert(key.clone()),
                None => {
                    let rep = members.iter().any(|(k, _)| *k == key);
                    if members.len() >= 16 {
                        seen = Some(members.iter().map(|(k, _)| k.clone()).collect());
                        if let Some(set) = &mut seen {
                            set.insert(key.clone());
                        }
                    }
                    rep
                }
            };
            if repeated {
                return Err(JsonError {
                    offset: key_pos,
                    reason: format!("repeated object key {key:?}"),
                });
            }
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':' after an object key"));
            }
            self.pos += 1;
            self.skip_ws();
            let value = self.value(depth)?;
            members.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Json::Obj(members));
                }
                _ => return Err(self.err("expected ',' or '}' in an object")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json<'a>, JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting deeper than 128 levels"));
        }
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Json::Arr(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Json::Arr(items));
                }
                _ => return Err(self.err("expected ',' or ']' in an array")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let end = self.pos + 4;
        let digits = self
            .bytes
            .get(self.pos..end)
            .ok_or_else(|| self.err("truncated \\u escape"))?;
        let mut v = 0u32;
        for &d in digits {
            let n = (d as char)
                .to_digit(16)
                .ok_or_else(|| self.err("invalid \\u escape"))?;
            v = v * 16 + n;
        }
        self.pos = end;
        Ok(v)
    }

    /// Long by design: the hot loop of the parser (every string of every input), kept in
    /// one piece so the fast path for plain ASCII stays tight.
    fn string(&mut self) -> Result<Cow<'a, str>, JsonError> {
        self.pos += 1; // opening quote
        let start = self.pos;
        // Fast path: no escapes, ASCII printable only — skipped over a word at a time.
        self.pos += plain_ascii_prefix(self.bytes.get(self.pos..).unwrap_or_default());
        while let Some(&b) = self.bytes.get(self.pos) {
            match b {
                b'"' => {
                    // The input was checked to be UTF-8 and the slice lies on ASCII bounds.
                    // Both ends are ASCII quotes, so they lie on character boundaries.
                    let text: &'a str = self.text;
                    let s = text
                        .get(start..self.pos)
                        .ok_or_else(|| self.err("invalid UTF-8"))?;
                    self.pos += 1;
                    return Ok(Cow::Borrowed(s));
                }
                b'\\' | 0x80..=0xFF => break,
                0x00..=0x1F => return Err(self.err("unescaped control character in a string")),
                _ => self.pos += 1,
            }
        }
        let mut out = String::from_utf8_lossy(&self.bytes[start..self.pos]).into_owned();
        loop {
            let Some(b) = self.peek() else {
                return Err(self.err("unterminated string"));
            };
            match b {
                b'"' => {
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                b'\\' => {
                    self.pos += 1;
                    let esc = self.peek().ok_or_else(|| self.err("unterminated string"))?;
                    self.pos += 1;
                    let c = match esc {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let at = self.pos - 2;
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                                    return Err(JsonError {
                                        offset: at,
                                        reason: "lone surrogate in a \\u escape".into(),
                                    });
                                }
                                self.pos += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(JsonError {
                                        offset: at,
                                        reason: "lone surrogate in a \\u escape".into(),
                                    });
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return Err(JsonError {
                                    offset: at,
                                    reason: "lone surrogate in a \\u escape".into(),
                                });
                            } else {
                                hi
                            };
                            let c = char::from_u32(code)
                                .ok_or_else(|| self.err("invalid \\u escape"))?;
                            if is_noncharacter(c) {
                                return Err(JsonError {
                                    offset: at,
                                    reason: format!("noncharacter U+{code:04X}"),
                                });
                            }
                            c
                        }
                        _ => return Err(self.err("invalid escape in a string")),
                    };
                    out.push(c);
                }
                0x00..=0x1F => return Err(self.err("unescaped control character in a string")),
                0x20..=0x7F => {
                    out.push(b as char);
                    self.pos += 1;
                }
                _ => {
                    // A multi-byte UTF-8 sequence; the whole input is valid UTF-8.
                    let len = match b {
                        0xC0..=0xDF => 2,
                        0xE0..=0xEF => 3,
                        _ => 4,
                    };
                    let chunk = self
                        .bytes
                        .get(self.pos..self.pos + len)
                        .and_then(|s| std::str::from_utf8(s).ok())
                        .ok_or_else(|| self.err("invalid UTF-8"))?;
                    let c = chunk
                        .chars()
                        .next()
                        .ok_or_else(|| self.err("invalid UTF-8"))?;
                    if is_noncharacter(c) {
                        return Err(self.err(&format!("noncharacter U+{:04X}", c as u32)));
                    }
                    out.push(c);
                    self.pos += len;
                }
            }
        }
    }

    fn number(&mut self) -> Result<Json<'a>, JsonError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                while matches!(self.peek(), Some(b'0'..=b'9')) {
                    self.pos += 1;
                }
            }
            _ => return Err(self.err("not JSON: invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("not JSON: invalid number"));
            }
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.pos += 1;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("not JSON: invalid number"));
            }
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.pos += 1;
            }
        }
        let all: &'a str = self.text;
        let text = all
            .get(start..self.pos)
            .ok_or_else(|| self.err("invalid number"))?;
        // An integer of at most 308 digits is below 10^308, inside the double range:
        // the common case needs no float parsing.
        if text.len() <= 308 && !text.contains(['.', 'e', 'E']) {
            return Ok(Json::Num(text));
        }
        // Rust's float parser rounds correctly, so an infinite result means the value is
        // beyond the largest finite double.
        let as_double: f64 = text.parse().map_err(|_| self.err("invalid number"))?;
        if as_double.is_infinite() {
            return Err(JsonError {
                offset: start,
                reason: format!("number {text} is beyond the IEEE 754 double range"),
            });
        }
        Ok(Json::Num(text))
    }
}

/// Unicode noncharacters: U+FDD0..U+FDEF and the last two code points of every plane.
/// The length of the longest prefix of `bytes` made of printable ASCII other than `"`
/// and `\` — what a string's fast path may skip — looking at eight bytes at a time.
fn plain_ascii_prefix(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // High bit set in (at least) the lowest byte of `x` that is zero; bytes above a true
    // hit may be flagged falsely, below never — so the lowest flag is exact.
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut i = 0;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let stop = zero_byte(w ^ (ONES * u64::from(b'"')))
            | zero_byte(w ^ (ONES * u64::from(b'\\')))
            | (w.wrapping_sub(ONES * 0x20) & !w & HIGH) // a byte below 0x20
            | (w & HIGH); // a byte of 0x80 or above
        if stop != 0 {
            return i + (stop.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + bytes[i..]
        .iter()
        .take_while(|&&b| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\')
        .count()
}

pub fn is_noncharacter(c: char) -> bool {
    let v = c as u32;
    (0xFDD0..=0xFDEF).contains(&v) || (v & 0xFFFE) == 0xFFFE
}

/// Integers up to this magnitude are exact in an IEEE double, and ECMAScript writes
/// them as plain digits — as RFC 8785 asks.
const JCS_EXACT_INTEGER: u64 = 1 << 53;

/// Writes the RFC 8785 canonical form of `value`.
///
/// Numbers: an integer of magnitude up to 2^53 is written as its digits, which is what
/// RFC 8785's ECMAScript number serialization gives for it. Any other number (a
/// fraction, a larger integer) is refused with a panic: the ledger's document rows hold
/// amounts as strings and no number at all, and writing one in another form than
/// ECMAScript's would silently give another digest.
pub fn write_jcs(value: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            let exact = n
                .as_u64()
                .map(|u| u <= JCS_EXACT_INTEGER)
                .or_else(|| n.as_i64().map(|i| i.unsigned_abs() <= JCS_EXACT_INTEGER))
                .unwrap_or(false);
            assert!(
                exact,
                "RFC 8785 form of the number {n} is not implemented: no such number belongs in a digest"
            );
            out.extend_from_slice(n.to_string().as_bytes());
        }
        Value::String(s) => write_jcs_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_jcs(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            // RFC 8785 §3.2.3: member names sorted by their UTF-16 code units.
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_jcs_string(key, out);
                out.push(b':');
                if let Some(v) = map.get(key) {
                    write_jcs(v, out);
                }
            }
            out.push(b'}');
        }
    }
}

pub(crate) fn write_jcs_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    // Only `"`, `\\` and control characters are escaped; every other character, UTF-8
    // multi-byte sequences included (all their bytes are ≥ 0x80), is copied as it is, so
    // runs of such bytes are copied whole.
    let bytes = s.as_bytes();
    let mut run_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[run_start..i]);
        if escape.is_empty() {
            out.extend_from_slice(format!("\\u{:04x}", b).as_bytes());
        } else {
            out.extend_from_slice(escape);
        }
        run_start = i + 1;
    }
    out.extend_from_slice(&bytes[run_start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(input: &str) -> bool {
        parse(input.as_bytes()).is_err()
    }

    #[test]
    fn accepts_plain_json() {
        let v = parse(br#" {"a": [1, -2.5e3, "x\u00e9\n", true, null], "b": {}} "#).unwrap();
        assert_eq!(v.get("b"), Some(&Json::Obj(vec![])));
        assert_eq!(
            v.get("a").map(|a| a.type_name()),
            Some("array"),
            "member a is the array"
        );
    }

    #[test]
    fn refuses_what_i_json_forbids() {
        let cases = [
            r#"{"a":1,"a":2}"#,
            "\u{feff}{}",
            r#"{"a":NaN}"#,
            r#"{"a":Infinity}"#,
            r#"{"a":1e400}"#,
            r#"{"a":-1e309}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00\ud800"}"#,
            r#"{"a":"\ufdd0"}"#,
            "{\"a\":\"\u{ffff}\"}",
            "{\"a\":\"\u{10fffe}\"}",
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":"tab	inside"}"#,
            r#"{"a":1}x"#,
            r#"{"a":1,}"#,
            "",
            "nul",
        ];
        for case in cases {
            assert!(refused(case), "should refuse {case:?}");
        }
        assert!(parse(&[b'"', 0xff, b'"']).is_err(), "invalid UTF-8");
    }

    #[test]
    fn the_plain_prefix_stops_at_the_first_byte_a_string_must_look_at() {
        for stop in [b'"', b'\\', 0x00, 0x1f, 0x7f + 1, 0xff] {
            for at in 0..20 {
                let mut bytes = vec![b'a'; 24];
                bytes[at] = stop;
                // Bytes after the stop that would also stop must not move it.
                bytes[(at + 1).min(23)] = b'"';
                assert_eq!(plain_ascii_prefix(&bytes), at, "byte {stop:#x} at {at}");
            }
        }
        assert_eq!(plain_ascii_prefix(b"abc def~ ghijklmnopq"), 20);
        assert_eq!(plain_ascii_prefix(b""), 0);
    }

    #[test]
    fn long_integers_are_checked_against_the_double_range() {
        // 10^308 (309 digits) is a finite double; 2·10^308 and 10^309 are not.
        let finite = format!(
            "[1{}, -1{}, 9{}]",
            "0".repeat(308),
            "0".repeat(308),
            "9".repeat(307)
        );
        assert!(parse(finite.as_bytes()).is_ok());
        for beyond in [
            format!("[2{}]", "0".repeat(308)),
            format!("[1{}]", "0".repeat(309)),
            format!("[-1{}]", "0".repeat(309)),
        ] {
            assert!(
                refused(&beyond),
                "should refuse a {}-character integer",
                beyond.len() - 2
            );
        }
    }

    #[test]
    fn depth_limit_is_128_levels() {
        let ok = format!("{}{}", "[".repeat(128), "]".repeat(128));
        let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
        assert!(parse(ok.as_bytes()).is_ok());
        assert!(parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn repeated_keys_in_big_objects() {
        let mut s = String::from("{");
        for i in 0..40 {
            s.push_str(&format!("\"k{i}\":{i},"));
        }
        s.push_str("\"k3\":0}");
        assert!(refused(&s));
    }

    #[test]
    fn json_equality_by_value() {
        let d = |s: &str| parse(s.as_bytes()).unwrap().content_digest();
        assert_eq!(
            d(r#"{"a":1,"b":"x"}"#),
            d(r#"{ "b" : "\u0078", "a" : 1.0 }"#)
        );
        assert_eq!(d(r#"{"a":100}"#), d(r#"{"a":1e2}"#));
        assert_eq!(d(r#"{"a":0}"#), d(r#"{"a":-0.0}"#));
        assert_ne!(d(r#"{"a":1}"#), d(r#"{"a":true}"#));
        assert_ne!(d(r#"{"a":null}"#), d(r#"{}"#));
        assert_ne!(d(r#"{"a":"1"}"#), d(r#"{"a":1}"#));
        assert_ne!(d(r#"{"a":[1,2]}"#), d(r#"{"a":[2,1]}"#));
        assert_ne!(
            d(r#"{"a":12345678901234567890123}"#),
            d(r#"{"a":12345678901234567890124}"#)
        );
    }

    #[test]
    fn the_content_digest_of_an_event_never_changes() {
        // Pinned: logs hold these digests, and an exact re-send must still match them.
        let event = r#"{"specversion":"1.0","id":"erp-1","source":"erp/sap","type":"sale.recorded","time":"2026-10-01T00:12:00Z","data":{"sale_id":"INV-1","partner_id":"P-024","lines":[{"line_id":"1","sku":"LIC-SEC","quantity":21,"net_amount":"3261.43","currency":"USD","x":-12.50e-3}]}}"#;
        let j = parse(event.as_bytes()).unwrap();
        let hex = crate::ids::hex(&j.content_digest());
        assert_eq!(
            hex,
            "e2bb71ddd85438054932483618026967774cc0251442c495da7745c9f9b88880"
        );
    }

    #[test]
    fn jcs_sorts_and_escapes() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"b":"\u001f\n€","a":[true,null],"\u00e9":1}"#).unwrap();
        let mut out = Vec::new();
        write_jcs(&v, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"a\":[true,null],\"b\":\"\\u001f\\n€\",\"é\":1}"
        );
    }

    #[test]
    fn jcs_writes_exact_integers_as_ecmascript_does() {
        let mut out = Vec::new();
        write_jcs(
            &serde_json::json!([0, -7, 9007199254740992u64, -9007199254740992i64]),
            &mut out,
        );
        assert_eq!(out, b"[0,-7,9007199254740992,-9007199254740992]");
    }

    #[test]
    #[should_panic(expected = "RFC 8785 form of the number")]
    fn jcs_refuses_a_fraction_rather_than_write_it_unlike_ecmascript() {
        // serde_json writes 1.0 as "1.0"; ECMAScript (and so RFC 8785) as "1".
        write_jcs(&serde_json::json!({"x": 1.0}), &mut Vec::new());
    }

    #[test]
    #[should_panic(expected = "RFC 8785 form of the number")]
    fn jcs_refuses_an_integer_a_double_cannot_hold() {
        write_jcs(&serde_json::json!(9007199254740993u64), &mut Vec::new());
    }
}
