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
//! Every function takes a byte offset and returns the offset just past what it
//! consumed. Offsets are only ever placed next to ASCII bytes (or at the ends
//! of the line), so slicing the `&str` there cannot split a character.

use super::{
    FieldValue, MAX_VALUE_BYTES,
    delimiters::Delimiters,
    error::{Found, InvalidValue, NamePart, ParseErrorKind, quote},
    name::{Escaping, Name, StrValue},
    number,
    scan::count_blanks,
};

/// An error at a byte offset within the logical line. Boxed: errors are
/// rare, and a pointer-sized error keeps every `Result` of the hot path small.
#[derive(Debug)]
pub(super) struct LineError(Box<(usize, ParseErrorKind)>);

impl LineError {
    pub fn into_parts(self) -> (usize, ParseErrorKind) {
        *self.0
    }
}

type Result<T> = std::result::Result<T, LineError>;

#[cold]
#[inline(never)]
fn fail<T>(offset: usize, kind: ParseErrorKind) -> Result<T> {
    Err(LineError(Box::new((offset, kind))))
}

/// Which bytes end each token (all are [`Delimiters`] candidates).
///
/// Names also stop at a backslash, which starts an escape. A measurement ends
/// at a space or comma and may not hold a tab, newline or NUL; keys end at a
/// space or `=` (a comma is an ordinary character in keys, as in IOx); tag
/// values end at a space or comma. Number and boolean tokens end at a comma or
/// space, the timestamp at a space or tab.
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
static VALUE_STOPS: [bool; 256] = stop_table(b" ,");
static TIMESTAMP_STOPS: [bool; 256] = stop_table(b" \t");

/// The line being parsed and its delimiter index.
#[derive(Clone, Copy)]
struct Cursor<'a, 'd> {
    line: &'a str,
    b: &'a [u8],
    delimiters: &'d Delimiters,
}

/// Parse one line into `tags` and `fields` (cleared first); returns the
/// measurement and timestamp. `delimiters` must index `line`.
pub(super) fn parse_line<'a>(
    line: &'a str,
    delimiters: &Delimiters,
    tags: &mut Vec<(Name<'a>, Name<'a>)>,
    fields: &mut Vec<(Name<'a>, FieldValue<'a>)>,
) -> Result<(Name<'a>, Option<i64>)> {
    tags.clear();
    fields.clear();
    let b = line.as_bytes();
    let c = Cursor {
        line,
        b,
        delimiters,
    };

    let start = count_blanks(b);
    let (measurement, mut i) = c.name(
        start,
        &MEASUREMENT_STOPS,
        Escaping::Measurement,
        NamePart::Measurement,
    )?;
    if i == start {
        return fail(start, ParseErrorKind::MissingMeasurement);
    }
    if b.get(i) == Some(&b',') {
        i = c.tag_set(i, tags)?;
    }
    match b.get(i) {
        Some(b' ') => {}
        None => return fail(i, ParseErrorKind::MissingFields),
        Some(_) => {
            let found = c.found(i);
            return fail(i, ParseErrorKind::ExpectedSpace { found });
        }
    }
    i = c.field_set(i, fields)?;
    let timestamp = c.timestamp(i)?;
    Ok((measurement, timestamp))
}

impl<'a> Cursor<'a, '_> {
    /// Offset of the first byte at or after `from` that is in `stops`, or the
    /// line length.
    #[inline(always)]
    fn find(&self, from: usize, stops: &[bool; 256]) -> usize {
        let mut i = self.delimiters.next(from);
        while let Some(&c) = self.b.get(i)
            && !stops[usize::from(c)]
        {
            i = self.delimiters.next(i + 1);
        }
        i
    }

    /// Scan a name from `start` to the first unescaped stop byte.
    ///
    /// Checks what InfluxDB checks of every name: its unescaped value may not
    /// end in a backslash and may not be longer than [`MAX_VALUE_BYTES`].
    /// Emptiness is left to the caller, whose error depends on the part.
    #[inline(always)]
    fn name(
        &self,
        start: usize,
        stops: &[bool; 256],
        rules: Escaping,
        part: NamePart,
    ) -> Result<(Name<'a>, usize)> {
        let mut end = self.find(start, stops);
        let mut escaping = Escaping::Plain;
        if self.b.get(end) == Some(&b'\\') {
            let (escaped_end, any) = self.escaped_name(end, stops, rules, part)?;
            end = escaped_end;
            if any {
                escaping = rules;
            }
        }
        let raw = self.slice(start, end)?;
        let name = Name::new(raw, escaping);
        if raw.len() > MAX_VALUE_BYTES && name.unescaped_len() > MAX_VALUE_BYTES {
            let len = name.unescaped_len();
            return fail(start, ParseErrorKind::NameTooLong { part, len });
        }
        Ok((name, end))
    }

    /// The rest of a name from its first backslash at `at`. Returns the end
    /// and whether any escape changed the value.
    #[cold]
    #[inline(never)]
    fn escaped_name(
        &self,
        mut at: usize,
        stops: &[bool; 256],
        rules: Escaping,
        part: NamePart,
    ) -> Result<(usize, bool)> {
        let mut any = false;
        // End of the last `\\` pair: if the name ends right there, its
        // unescaped value ends in a backslash.
        let mut after_escaped_backslash = usize::MAX;
        loop {
            // `b[at]` is a backslash.
            let Some(&next) = self.b.get(at + 1) else {
                // A dangling backslash at the end of the line.
                return fail(at, ParseErrorKind::EndsWithBackslash(part));
            };
            if rules.escapes(next) {
                any = true;
                if next == b'\\' {
                    after_escaped_backslash = at + 2;
                }
            }
            // Escaped or not, the next byte belongs to the name (an unknown
            // escape such as `\t` keeps both bytes).
            at = self.find(at + 2, stops);
            if self.b.get(at) != Some(&b'\\') {
                break;
            }
        }
        if at == after_escaped_backslash {
            return fail(at - 1, ParseErrorKind::EndsWithBackslash(part));
        }
        Ok((at, any))
    }

    /// `("," tag-key "=" tag-value)+` from the comma at `i`; returns the
    /// offset of the byte after the last tag value.
    fn tag_set(&self, mut i: usize, tags: &mut Vec<(Name<'a>, Name<'a>)>) -> Result<usize> {
        let b = self.b;
        loop {
            // `b[i]` is the comma.
            let key_start = i + 1;
            let (key, end) = self.name(key_start, &KEY_STOPS, Escaping::Key, NamePart::TagKey)?;
            if end == key_start {
                return fail(key_start, ParseErrorKind::MissingTagKey);
            }
            if b.get(end) != Some(&b'=') {
                let key = quote(key.raw());
                return fail(end, ParseErrorKind::MissingTagEquals { key });
            }
            let value_start = end + 1;
            let (value, end) = self.name(
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

    /// `" "+ field ("," field)*` from the space at `i`; returns the offset
    /// just past the last field value.
    fn field_set(&self, i: usize, fields: &mut Vec<(Name<'a>, FieldValue<'a>)>) -> Result<usize> {
        let b = self.b;
        let mut key_start = i + b[i..].iter().take_while(|&&c| c == b' ').count();
        if key_start == b.len() {
            return fail(key_start, ParseErrorKind::MissingFields);
        }
        loop {
            let (key, eq) = self.name(key_start, &KEY_STOPS, Escaping::Key, NamePart::FieldKey)?;
            if eq == key_start {
                return fail(key_start, ParseErrorKind::MissingFieldKey);
            }
            if b.get(eq) != Some(&b'=') {
                let key = quote(key.raw());
                return fail(eq, ParseErrorKind::MissingFieldEquals { key });
            }
            let (value, end) = self.field_value(eq + 1, key)?;
            fields.push((key, value));
            if b.get(end) != Some(&b',') {
                return Ok(end);
            }
            key_start = end + 1;
        }
    }

    /// A field value from `i`. On success the returned offset is the end of
    /// the line, a space or a comma: anything else is reported here.
    #[inline(always)]
    fn field_value(&self, i: usize, key: Name<'_>) -> Result<(FieldValue<'a>, usize)> {
        let b = self.b;
        match b.get(i) {
            Some(b'-' | b'0'..=b'9') => {
                let end = self.find(i, &VALUE_STOPS);
                match number::field(b, i, end) {
                    Ok(value) => Ok((value, end)),
                    Err(problem) => {
                        let reason = problem.describe(b, i, end);
                        let field = quote(key.raw());
                        fail(i, ParseErrorKind::InvalidFieldValue { field, reason })
                    }
                }
            }
            Some(b'"') => self.string(i, key),
            Some(b't' | b'T' | b'f' | b'F') => {
                let end = self.find(i, &VALUE_STOPS);
                match &b[i..end] {
                    b"t" | b"T" | b"true" | b"True" | b"TRUE" => Ok((FieldValue::Bool(true), end)),
                    b"f" | b"F" | b"false" | b"False" | b"FALSE" => {
                        Ok((FieldValue::Bool(false), end))
                    }
                    _ => self.invalid_value(i, key, InvalidValue::InvalidBoolean),
                }
            }
            None | Some(b',' | b' ') => {
                let field = quote(key.raw());
                fail(i, ParseErrorKind::MissingFieldValue { field })
            }
            Some(_) => self.invalid_value(i, key, InvalidValue::Unrecognised),
        }
    }

    #[cold]
    #[inline(never)]
    fn invalid_value<T>(
        &self,
        i: usize,
        key: Name<'_>,
        reason: fn(String) -> InvalidValue,
    ) -> Result<T> {
        let end = self.find(i, &VALUE_STOPS);
        let token = quote(self.line.get(i..end).unwrap_or_default());
        let field = quote(key.raw());
        let reason = reason(token);
        fail(i, ParseErrorKind::InvalidFieldValue { field, reason })
    }

    /// A string field value from the opening quote at `open`.
    fn string(&self, open: usize, key: Name<'_>) -> Result<(FieldValue<'a>, usize)> {
        let b = self.b;
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
        let raw = self.slice(start, close)?;
        let len = raw.len() - escapes;
        if len > MAX_VALUE_BYTES {
            let field = quote(key.raw());
            let reason = InvalidValue::StringTooLong(len);
            return fail(open, ParseErrorKind::InvalidFieldValue { field, reason });
        }
        let escaping = if escapes == 0 {
            Escaping::Plain
        } else {
            Escaping::Str
        };
        let end = close + 1;
        match b.get(end) {
            None | Some(b',' | b' ') => Ok((FieldValue::String(StrValue::new(raw, escaping)), end)),
            Some(_) => {
                let field = quote(key.raw());
                let reason = InvalidValue::AfterString(self.found(end));
                fail(end, ParseErrorKind::InvalidFieldValue { field, reason })
            }
        }
    }

    /// `(" " blank* timestamp?)? blank*` from `i` (end of line or the space
    /// after the last field value).
    fn timestamp(&self, i: usize) -> Result<Option<i64>> {
        let b = self.b;
        let start = i + count_blanks(&b[i..]);
        if start == b.len() {
            return Ok(None);
        }
        let end = self.find(start, &TIMESTAMP_STOPS);
        let value = match number::timestamp(b, start, end) {
            Ok(value) => value,
            Err(reason) => {
                let token = quote(self.slice(start, end)?);
                return fail(start, ParseErrorKind::InvalidTimestamp { token, reason });
            }
        };
        let rest = end + count_blanks(&b[end..]);
        if rest != b.len() {
            let found = quote(self.slice(rest, b.len())?);
            return fail(rest, ParseErrorKind::TrailingContent { found });
        }
        Ok(Some(value))
    }

    /// The character at byte offset `i`, for error messages.
    #[cold]
    fn found(&self, i: usize) -> Found {
        self.line
            .get(i..)
            .and_then(|rest| rest.chars().next())
            .map_or(Found::EndOfLine, Found::Char)
    }

    /// `&line[start..end]`, which cannot fail for offsets next to ASCII
    /// bytes; a failure would be a bug, reported as an error, not a panic.
    #[inline(always)]
    fn slice(&self, start: usize, end: usize) -> Result<&'a str> {
        match self.line.get(start..end) {
            Some(s) => Ok(s),
            None => fail(start, ParseErrorKind::InvalidUtf8),
        }
    }
}
