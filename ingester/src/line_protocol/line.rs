//! The grammar of one logical line (already split off, `\r` stripped, valid
//! UTF-8, known not to be blank or a comment).
//!
//! ```text
//! line        = blank* measurement ("," tag)* " "+ field ("," field)* (" " blank* timestamp?)? blank*
//! tag         = tag-key "=" tag-value
//! field       = field-key "=" field-value
//! blank       = " " | "\t"
//! ```
//!
//! Every function takes the line and a byte offset and returns the offset just
//! past what it consumed. Offsets are only ever placed next to ASCII bytes (or
//! at the ends of the line), so slicing the `&str` there cannot split a
//! character.

use super::{
    FieldValue, MAX_VALUE_BYTES,
    error::{Found, InvalidValue, NamePart, ParseErrorKind, TimestampProblem, quote},
    name::{Escaping, Name, StrValue},
    scan::count_blanks,
};

/// An error at a byte offset within the logical line.
#[derive(Debug)]
pub(super) struct LineError {
    pub offset: usize,
    pub kind: ParseErrorKind,
}

type Result<T> = std::result::Result<T, LineError>;

#[cold]
fn fail<T>(offset: usize, kind: ParseErrorKind) -> Result<T> {
    Err(LineError { offset, kind })
}

/// Bytes that end a name (or start an escape) in each part of a line.
/// Measurement: space, comma, tab, newline, NUL, backslash. Keys: space, `=`,
/// tab, newline, backslash (a comma is an ordinary character in keys, as in
/// InfluxDB IOx). Tag values: space, comma, tab, newline, backslash.
const fn stop_table(stops: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < stops.len() {
        table[stops[i] as usize] = true;
        i += 1;
    }
    table
}
static MEASUREMENT_STOPS: [bool; 256] = stop_table(b" ,\t\n\0\\");
static KEY_STOPS: [bool; 256] = stop_table(b" =\t\n\\");
static TAG_VALUE_STOPS: [bool; 256] = stop_table(b" ,\t\n\\");

/// Parse one line into `tags` and `fields` (cleared first); returns the
/// measurement and timestamp.
pub(super) fn parse_line<'a>(
    line: &'a str,
    tags: &mut Vec<(Name<'a>, Name<'a>)>,
    fields: &mut Vec<(Name<'a>, FieldValue<'a>)>,
) -> Result<(Name<'a>, Option<i64>)> {
    tags.clear();
    fields.clear();
    let b = line.as_bytes();

    let start = count_blanks(b);
    let (measurement, mut i) = name(
        line,
        start,
        &MEASUREMENT_STOPS,
        Escaping::Measurement,
        NamePart::Measurement,
    )?;
    if i == start {
        return fail(start, ParseErrorKind::MissingMeasurement);
    }
    if b.get(i) == Some(&b',') {
        i = tag_set(line, i, tags)?;
    }
    match b.get(i) {
        Some(b' ') => {}
        None => return fail(i, ParseErrorKind::MissingFields),
        Some(_) => return fail(i, expected_space(line, i)),
    }

    i = field_set(line, i, fields)?;
    let timestamp = timestamp(line, i)?;
    Ok((measurement, timestamp))
}

/// Scan a name from `start` to the first unescaped stop byte.
///
/// Checks what InfluxDB checks of every name: its unescaped value may not end
/// in a backslash and may not be longer than [`MAX_VALUE_BYTES`]. Emptiness is
/// left to the caller, whose error depends on the part.
#[inline(always)]
fn name<'a>(
    line: &'a str,
    start: usize,
    stops: &[bool; 256],
    rules: Escaping,
    part: NamePart,
) -> Result<(Name<'a>, usize)> {
    let b = line.as_bytes();
    let mut end = start
        + b[start..]
            .iter()
            .position(|&c| stops[usize::from(c)])
            .unwrap_or(b.len() - start);
    let mut escaping = Escaping::Plain;
    if b.get(end) == Some(&b'\\') {
        let (escaped_end, any) = escaped_name(line, end, stops, rules, part)?;
        end = escaped_end;
        if any {
            escaping = rules;
        }
    }
    let raw = slice(line, start, end)?;
    let name = Name::new(raw, escaping);
    if raw.len() > MAX_VALUE_BYTES && name.unescaped_len() > MAX_VALUE_BYTES {
        let len = name.unescaped_len();
        return fail(start, ParseErrorKind::NameTooLong { part, len });
    }
    Ok((name, end))
}

/// The rest of a name from its first backslash at `at`. Returns the end and
/// whether any escape changed the value.
#[cold]
#[inline(never)]
fn escaped_name(
    line: &str,
    mut at: usize,
    stops: &[bool; 256],
    rules: Escaping,
    part: NamePart,
) -> Result<(usize, bool)> {
    let b = line.as_bytes();
    let mut any = false;
    // End of the last `\\` pair: if the name ends right there, its
    // unescaped value ends in a backslash.
    let mut after_escaped_backslash = usize::MAX;
    loop {
        // `b[at]` is a backslash.
        match b.get(at + 1) {
            // A dangling backslash at the end of the line.
            None => return fail(at, ParseErrorKind::EndsWithBackslash(part)),
            Some(&next) => {
                if rules.escapes(next) {
                    any = true;
                    if next == b'\\' {
                        after_escaped_backslash = at + 2;
                    }
                }
                // Escaped or not, the next byte belongs to the name (an
                // unknown escape such as `\t` keeps both bytes).
                at += 2;
            }
        }
        at += b[at..]
            .iter()
            .position(|&c| stops[usize::from(c)])
            .unwrap_or(b.len() - at);
        if b.get(at) != Some(&b'\\') {
            break;
        }
    }
    if at == after_escaped_backslash {
        return fail(at - 1, ParseErrorKind::EndsWithBackslash(part));
    }
    Ok((at, any))
}

/// `("," tag-key "=" tag-value)+` from the comma at `i`; returns the offset of
/// the byte after the last tag value.
fn tag_set<'a>(
    line: &'a str,
    mut i: usize,
    tags: &mut Vec<(Name<'a>, Name<'a>)>,
) -> Result<usize> {
    let b = line.as_bytes();
    loop {
        // `b[i]` is the comma.
        let key_start = i + 1;
        let (key, end) = name(line, key_start, &KEY_STOPS, Escaping::Key, NamePart::TagKey)?;
        if end == key_start {
            return fail(key_start, ParseErrorKind::MissingTagKey);
        }
        if b.get(end) != Some(&b'=') {
            let key = quote(key.raw());
            return fail(end, ParseErrorKind::MissingTagEquals { key });
        }
        let value_start = end + 1;
        let (value, end) = name(
            line,
            value_start,
            &TAG_VALUE_STOPS,
            Escaping::Key,
            NamePart::TagValue,
        )?;
        if end == value_start {
            let key = quote(key.raw());
            return fail(value_start, ParseErrorKind::MissingTagValue { key });
        }
        tags.push((key, value));
        if b.get(end) != Some(&b',') {
            return Ok(end);
        }
        i = end;
    }
}

/// `" "+ field ("," field)*` from the space at `i`; returns the offset just
/// past the last field value.
fn field_set<'a>(
    line: &'a str,
    i: usize,
    fields: &mut Vec<(Name<'a>, FieldValue<'a>)>,
) -> Result<usize> {
    let b = line.as_bytes();
    let mut key_start = i + b[i..].iter().position(|&c| c != b' ').unwrap_or(b.len() - i);
    if key_start == b.len() {
        return fail(key_start, ParseErrorKind::MissingFields);
    }
    loop {
        let (key, end) = name(line, key_start, &KEY_STOPS, Escaping::Key, NamePart::FieldKey)?;
        if end == key_start {
            return fail(key_start, ParseErrorKind::MissingFieldKey);
        }
        if b.get(end) != Some(&b'=') {
            let key = quote(key.raw());
            return fail(end, ParseErrorKind::MissingFieldEquals { key });
        }
        let (value, end) = field_value(line, end + 1, key)?;
        fields.push((key, value));
        if b.get(end) != Some(&b',') {
            return Ok(end);
        }
        key_start = end + 1;
    }
}

/// A field value from `i`. On success the returned offset is the end of the
/// line, a space or a comma: anything else is reported here.
#[inline]
fn field_value<'a>(line: &'a str, i: usize, key: Name<'_>) -> Result<(FieldValue<'a>, usize)> {
    let b = line.as_bytes();
    match b.get(i) {
        Some(b'-' | b'0'..=b'9') => number(b, i).or_else(|reason| {
            let field = quote(key.raw());
            fail(i, ParseErrorKind::InvalidFieldValue { field, reason })
        }),
        Some(b'"') => string(line, i, key),
        Some(b't' | b'T' | b'f' | b'F') => {
            let end = token_end(b, i);
            match &b[i..end] {
                b"t" | b"T" | b"true" | b"True" | b"TRUE" => Ok((FieldValue::Bool(true), end)),
                b"f" | b"F" | b"false" | b"False" | b"FALSE" => Ok((FieldValue::Bool(false), end)),
                _ => invalid_value(line, i, key, InvalidValue::InvalidBoolean),
            }
        }
        None | Some(b',' | b' ') => {
            let field = quote(key.raw());
            fail(i, ParseErrorKind::MissingFieldValue { field })
        }
        Some(_) => invalid_value(line, i, key, InvalidValue::Unrecognised),
    }
}

/// End of a number or boolean token: the next comma or space, or the end.
#[inline]
fn token_end(b: &[u8], i: usize) -> usize {
    i + b[i..]
        .iter()
        .position(|&c| c == b',' || c == b' ')
        .unwrap_or(b.len() - i)
}

#[cold]
fn invalid_value<T>(
    line: &str,
    i: usize,
    key: Name<'_>,
    reason: fn(String) -> InvalidValue,
) -> Result<T> {
    let token = quote(line.get(i..token_end(line.as_bytes(), i)).unwrap_or_default());
    let field = quote(key.raw());
    let reason = reason(token);
    fail(i, ParseErrorKind::InvalidFieldValue { field, reason })
}

const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A number from `i` (which holds `-` or a digit): `-?D+i` (i64), `D+u` (u64)
/// or `-?D+(.D+)?([eE][+-]?D+)?` (f64), followed by a comma, a space or the end.
#[inline]
fn number(b: &[u8], start: usize) -> std::result::Result<(FieldValue<'static>, usize), InvalidValue> {
    let token = |b: &[u8]| quote(std::str::from_utf8(&b[start..token_end(b, start)]).unwrap_or_default());
    let at_end = |i: usize| matches!(b.get(i), None | Some(b',' | b' '));

    let negative = b[start] == b'-';
    let int_start = start + usize::from(negative);
    let (mut mantissa, mut i) = digits(b, int_start, 0);
    let int_digits = i - int_start;
    if int_digits == 0 {
        return Err(InvalidValue::InvalidNumber(token(b)));
    }
    match b.get(i) {
        Some(b'i') if at_end(i + 1) => {
            let magnitude = if int_digits > 18 { checked_digits(&b[int_start..i]) } else { Some(mantissa) };
            let value = magnitude.and_then(|m| {
                if negative {
                    (m <= 1 << 63).then(|| 0i64.wrapping_sub(m as i64))
                } else {
                    i64::try_from(m).ok()
                }
            });
            return match value {
                Some(v) => Ok((FieldValue::I64(v), i + 1)),
                None => Err(InvalidValue::IntegerOutOfRange(token(b))),
            };
        }
        Some(b'u') if !negative && at_end(i + 1) => {
            // Up to 19 digits cannot overflow the accumulator.
            let value = if int_digits > 19 { checked_digits(&b[int_start..i]) } else { Some(mantissa) };
            return match value {
                Some(v) => Ok((FieldValue::U64(v), i + 1)),
                None => Err(InvalidValue::UnsignedOutOfRange(token(b))),
            };
        }
        None | Some(b',' | b' ' | b'.' | b'e' | b'E') => {}
        Some(_) => return Err(InvalidValue::InvalidNumber(token(b))),
    }

    // A float.
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        let frac_start = i + 1;
        (mantissa, i) = digits(b, frac_start, mantissa);
        frac_digits = i - frac_start;
        if frac_digits == 0 {
            return Err(InvalidValue::InvalidNumber(token(b)));
        }
    }
    let mut exponent: i64 = 0;
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        let exp_negative = b.get(i) == Some(&b'-');
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        let exp_start = i;
        while let Some(&c) = b.get(i)
            && c.is_ascii_digit()
        {
            // Saturate: anything this large goes to the slow path anyway.
            exponent = (exponent * 10 + i64::from(c - b'0')).min(1 << 32);
            i += 1;
        }
        if i == exp_start {
            return Err(InvalidValue::InvalidNumber(token(b)));
        }
        if exp_negative {
            exponent = -exponent;
        }
    }
    if !at_end(i) {
        return Err(InvalidValue::InvalidNumber(token(b)));
    }

    // Clinger's fast path: an exactly representable mantissa times or divided
    // by an exactly representable power of ten rounds correctly in one step.
    let scale = exponent - frac_digits as i64;
    let value = if int_digits + frac_digits <= 19 && mantissa <= 1 << 53 && (-22..=22).contains(&scale) {
        let m = mantissa as f64;
        let v = if scale >= 0 { m * POW10[scale as usize] } else { m / POW10[(-scale) as usize] };
        if negative { -v } else { v }
    } else {
        // The grammar is a subset of what `f64::from_str` accepts.
        let text = std::str::from_utf8(&b[start..i]).map_err(|_| InvalidValue::InvalidNumber(token(b)))?;
        text.parse::<f64>().map_err(|_| InvalidValue::InvalidNumber(token(b)))?
    };
    if !value.is_finite() {
        return Err(InvalidValue::FloatOutOfRange(token(b)));
    }
    Ok((FieldValue::F64(value), i))
}

/// Accumulate decimal digits from `i` into `acc` (wrapping: callers bound the
/// digit count or recheck). Returns the value and the offset after the digits.
#[inline(always)]
fn digits(b: &[u8], mut i: usize, mut acc: u64) -> (u64, usize) {
    while let Some(&c) = b.get(i)
        && c.is_ascii_digit()
    {
        acc = acc.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
        i += 1;
    }
    (acc, i)
}

/// The value of an all-digit slice, or `None` if it exceeds `u64`.
#[cold]
fn checked_digits(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &c| acc.checked_mul(10)?.checked_add(u64::from(c - b'0')))
}

/// Like [`checked_digits`] for at most 19 digits, which never overflow.
#[inline]
fn checked_digits_19(digits: &[u8]) -> Option<u64> {
    Some(digits.iter().fold(0u64, |acc, &c| acc * 10 + u64::from(c - b'0')))
}

/// A string field value from the opening quote at `open`.
fn string<'a>(line: &'a str, open: usize, key: Name<'_>) -> Result<(FieldValue<'a>, usize)> {
    let b = line.as_bytes();
    let start = open + 1;
    let mut i = start;
    let mut escapes = 0usize;
    let close = loop {
        let Some(off) = memchr::memchr2(b'"', b'\\', &b[i..]) else {
            let field = quote(key.raw());
            return fail(open, ParseErrorKind::UnterminatedString { field });
        };
        let at = i + off;
        if b[at] == b'"' {
            break at;
        }
        // A backslash: `\"` and `\\` are escapes, any other is literal.
        if matches!(b.get(at + 1), Some(b'"' | b'\\')) {
            escapes += 1;
            i = at + 2;
        } else {
            i = at + 1;
        }
    };
    let raw = slice(line, start, close)?;
    let len = raw.len() - escapes;
    if len > MAX_VALUE_BYTES {
        let field = quote(key.raw());
        let reason = InvalidValue::StringTooLong(len);
        return fail(open, ParseErrorKind::InvalidFieldValue { field, reason });
    }
    let escaping = if escapes == 0 { Escaping::Plain } else { Escaping::Str };
    let end = close + 1;
    match b.get(end) {
        None | Some(b',' | b' ') => Ok((FieldValue::String(StrValue::new(raw, escaping)), end)),
        Some(_) => {
            let field = quote(key.raw());
            let reason = InvalidValue::AfterString(found(line, end));
            fail(end, ParseErrorKind::InvalidFieldValue { field, reason })
        }
    }
}

/// `(" " blank* timestamp?)? blank*` from `i` (end of line or the space after
/// the last field value).
fn timestamp(line: &str, i: usize) -> Result<Option<i64>> {
    let b = line.as_bytes();
    let start = i + count_blanks(&b[i..]);
    if start == b.len() {
        return Ok(None);
    }
    let end = start + b[start..].iter().position(|&c| c == b' ' || c == b'\t').unwrap_or(b.len() - start);
    let text = &b[start..end];
    let negative = text[0] == b'-';
    let digits = &text[usize::from(negative)..];
    let problem = if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        Some(TimestampProblem::NotAnInteger)
    } else {
        None
    };
    let value = match problem {
        Some(_) => None,
        None if digits.len() <= 18 => {
            let m = checked_digits_19(digits).unwrap_or_default() as i64;
            Some(if negative { -m } else { m })
        }
        None => checked_digits(digits).and_then(|m| {
            if negative {
                (m <= 1 << 63).then(|| 0i64.wrapping_sub(m as i64))
            } else {
                i64::try_from(m).ok()
            }
        }),
    };
    let Some(value) = value else {
        let token = quote(slice(line, start, end)?);
        let reason = problem.unwrap_or(TimestampProblem::OutOfRange);
        return fail(start, ParseErrorKind::InvalidTimestamp { token, reason });
    };
    let rest = end + count_blanks(&b[end..]);
    if rest != b.len() {
        let found = quote(slice(line, rest, b.len())?);
        return fail(rest, ParseErrorKind::TrailingContent { found });
    }
    Ok(Some(value))
}

#[cold]
fn expected_space(line: &str, i: usize) -> ParseErrorKind {
    ParseErrorKind::ExpectedSpace { found: found(line, i) }
}

/// The character at byte offset `i`, for error messages.
fn found(line: &str, i: usize) -> Found {
    line.get(i..)
        .and_then(|rest| rest.chars().next())
        .map_or(Found::EndOfLine, Found::Char)
}

/// `&line[start..end]`, which cannot fail for offsets next to ASCII bytes; a
/// failure would be a bug, reported as an error rather than a panic.
#[inline(always)]
fn slice(line: &str, start: usize, end: usize) -> Result<&str> {
    match line.get(start..end) {
        Some(s) => Ok(s),
        None => fail(start, ParseErrorKind::InvalidUtf8),
    }
}
