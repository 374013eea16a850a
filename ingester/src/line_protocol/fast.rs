//! The fast path for plain lines, the shape almost every real line has:
//!
//! ```text
//! measurement(,key=value)* key=value(,key=value)*( timestamp)?
//! ```
//!
//! with single spaces, no escapes, no leading or trailing blanks, and string
//! values without backslashes. Such a line's structure is exactly its
//! sequence of delimiter candidates (`,` `=` ` ` ... see `delimiters.rs`), so
//! this parser walks the candidates one by one, with no per-byte work and no
//! error handling. At the first thing it does not expect it gives up
//! (`None`), and the caller runs the general parser (`line.rs`) on the line,
//! which handles everything and reports errors.
//!
//! Invariant, checked by a property test: whenever this returns a line, the
//! general parser returns the same line.

use super::{
    FieldValue, MAX_VALUE_BYTES,
    delimiters::{Candidates, Delimiters},
    name::{Escaping, Name, StrValue},
    number,
};

/// Parse `line` if it is plain; `None` otherwise, leaving `tags` and
/// `fields` in an unspecified state (the general parser clears them).
#[inline]
pub(super) fn parse_plain<'a>(
    line: &'a str,
    delimiters: &Delimiters,
    tags: &mut Vec<(Name<'a>, Name<'a>)>,
    fields: &mut Vec<(Name<'a>, FieldValue<'a>)>,
) -> Option<(Name<'a>, Option<i64>)> {
    let b = line.as_bytes();
    let len = b.len();
    // No name in a line this short can exceed the length limit.
    if len > MAX_VALUE_BYTES {
        return None;
    }
    tags.clear();
    fields.clear();
    let plain = |start: usize, end: usize| plain_name(line, start, end);
    let mut candidates = Candidates::from(delimiters, 0);

    // The measurement ends at the first candidate: a comma or a space.
    let mut at = candidates.next()?;
    if at == 0 {
        return None;
    }
    let measurement = plain(0, at)?;

    while b[at] == b',' {
        let key_start = at + 1;
        let eq = candidates.next()?;
        if b[eq] != b'=' || eq == key_start {
            return None;
        }
        let value_end = candidates.next()?;
        if value_end == eq + 1 || !matches!(b[value_end], b',' | b' ') {
            return None;
        }
        tags.push((plain(key_start, eq)?, plain(eq + 1, value_end)?));
        at = value_end;
    }
    if b[at] != b' ' {
        return None;
    }
    let timestamp = plain_fields(line, delimiters, candidates, at, fields)?;
    Some((measurement, timestamp))
}

/// The fields and timestamp of a line whose measurement and tags were not
/// parsed (the caller knows them): `text` starts at the space that ends
/// the tag section, and `delimiters` indexes `text` alone. `None` when the
/// rest is not plain (the caller then parses the whole line).
#[inline]
pub(super) fn parse_plain_fields<'a>(
    text: &'a str,
    delimiters: &Delimiters,
    fields: &mut Vec<(Name<'a>, FieldValue<'a>)>,
) -> Option<Option<i64>> {
    if text.len() > MAX_VALUE_BYTES {
        return None;
    }
    fields.clear();
    let mut candidates = Candidates::from(delimiters, 0);
    // The space, the first candidate.
    if candidates.next()? != 0 || text.as_bytes()[0] != b' ' {
        return None;
    }
    plain_fields(text, delimiters, candidates, 0, fields)
}

/// The field section of a plain line, from the space at `at` (the
/// candidate `candidates` returned last), and the timestamp.
#[inline(always)]
fn plain_fields<'a, 'd>(
    line: &'a str,
    delimiters: &'d Delimiters,
    mut candidates: Candidates<'d>,
    mut at: usize,
    fields: &mut Vec<(Name<'a>, FieldValue<'a>)>,
) -> Option<Option<i64>> {
    let b = line.as_bytes();
    let len = b.len();
    let plain = |start: usize, end: usize| plain_name(line, start, end);
    loop {
        // `b[at]` is the space or comma before a field.
        let key_start = at + 1;
        let eq = candidates.next()?;
        if b[eq] != b'=' || eq == key_start {
            return None;
        }
        let key = plain(key_start, eq)?;
        let value_start = eq + 1;
        let (value, end) = match *b.get(value_start)? {
            b'"' => {
                let content = value_start + 1;
                let close = content + memchr::memchr2(b'"', b'\\', &b[content..])?;
                if b[close] != b'"' {
                    return None;
                }
                let end = close + 1;
                if !matches!(b.get(end), None | Some(b',' | b' ')) {
                    return None;
                }
                // Skip the candidates inside the string and its terminator.
                candidates = Candidates::from(delimiters, end + 1);
                let raw = line.get(content..close)?;
                (FieldValue::String(StrValue::new(raw, Escaping::Plain)), end)
            }
            first => {
                let end = candidates.next().unwrap_or(len);
                if end < len && !matches!(b[end], b',' | b' ') {
                    return None;
                }
                let value = match first {
                    b'-' | b'0'..=b'9' => number::field(b, value_start, end).ok()?,
                    b't' | b'T' | b'f' | b'F' => match &b[value_start..end] {
                        b"t" | b"T" | b"true" | b"True" | b"TRUE" => FieldValue::Bool(true),
                        b"f" | b"F" | b"false" | b"False" | b"FALSE" => FieldValue::Bool(false),
                        _ => return None,
                    },
                    _ => return None,
                };
                (value, end)
            }
        };
        fields.push((key, value));
        match b.get(end) {
            Some(b',') => at = end,
            None => return Some(None),
            Some(_) => {
                // A space: what follows must be a bare timestamp, the last
                // token of the line.
                let start = end + 1;
                if start == len || candidates.next().is_some() {
                    return None;
                }
                let timestamp = number::timestamp(b, start, len).ok()?;
                return Some(Some(timestamp));
            }
        }
    }
}

/// `line[start..end]` as a name without escapes (`None` off a character
/// boundary, which only a non-plain line can produce).
#[inline(always)]
fn plain_name(line: &str, start: usize, end: usize) -> Option<Name<'_>> {
    line.get(start..end)
        .map(|raw| Name::new(raw, Escaping::Plain))
}
