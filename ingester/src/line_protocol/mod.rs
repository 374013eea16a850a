//! A zero-copy parser for InfluxDB line protocol.
//!
//! ```text
//! measurement[,tag_key=tag_value...] field_key=field_value[,...] [timestamp]
//! ```
//!
//! [`Parser::next_line`] yields one [`Line`] per non-blank, non-comment line.
//! Names and string values are slices of the input ([`Name`], [`StrValue`]),
//! unescaped only on demand; tags and fields land in two `Vec`s owned by the
//! parser and reused for every line, so parsing allocates nothing per line
//! (errors, the cold path, may allocate their message). The parser is
//! single-threaded and holds no locks; run one per request.
//!
//! The grammar is InfluxDB's: that of the IOx crate `influxdb_line_protocol`
//! (the parser of InfluxDB 3 / IOx), which was written to match the Go parser
//! of InfluxDB 1.x/2.x. Where those two differ we follow IOx, except for the
//! choices listed at the end. Checks that need the schema or a whole line's
//! names (a column called `time`, one name used as both tag and field,
//! duplicate keys) are *not* made here; the write validator makes them.
//!
//! # Lines
//!
//! - Lines end at `\n`, except a newline inside a double-quoted string field
//!   value (it belongs to the value) or preceded by an unescaped backslash.
//!   InfluxDB decides this before parsing, with a heuristic we reproduce
//!   exactly (see `scan.rs`); [`Line::line_number`] counts every physical line.
//! - Lines holding only spaces and tabs are skipped. A line whose first
//!   non-blank character is `#` is a comment, so no measurement can start with
//!   an unescaped `#` (`\#cpu` is the measurement `\#cpu`, backslash included:
//!   `\#` is not an escape). Leading spaces and tabs are ignored.
//! - Sections are separated by one or more spaces. A tab is not a separator:
//!   it ends a name, and then an error follows (InfluxDB 3 does the same).
//!
//! # Names and escapes
//!
//! - Measurement: ends at an unescaped space or comma; `\,` `\ ` `\\` escape.
//!   It may not hold an unescaped tab, newline or NUL.
//! - Tag keys end at `=`, tag values at `,`, field keys at `=` (and all at a
//!   space); `\,` `\=` `\ ` `\\` escape. A comma is an ordinary character in
//!   tag and field keys (`m,a,b=1 f=1` has the tag key `a,b`) and `=` in tag
//!   values, as in IOx.
//! - A backslash before any other character is kept with it (`a\tb` is the four
//!   characters `a`, `\`, `t`, `b`; a backslash before a real tab keeps both).
//! - Refused: an empty name, a name whose *unescaped* value ends in a backslash
//!   (`cpu\\` as well as a dangling `cpu\`), a name or string value longer than
//!   [`MAX_VALUE_BYTES`] once unescaped, a comma after the measurement not
//!   followed by a tag, a line with no field.
//!
//! # Values
//!
//! - Integer `-?D+i` (i64), unsigned `D+u` (u64), float
//!   `-?D+(.D+)?([eE][+-]?D+)?` (so `1`, `-1.5`, `1e3`, `-1.5E-3`, `2E+10`; not
//!   `.5`, `5.`, `+5`, `NaN`, `inf`). Out-of-range integers are refused.
//!   Floats are correctly rounded (the same bits as `f64::from_str`).
//! - Booleans: `t T true True TRUE` and `f F false False FALSE`, exactly.
//! - Strings: `"..."`; `\"` and `\\` escape, any other backslash is literal;
//!   newlines are allowed inside.
//! - A value must be followed by a comma, a space or the end of the line.
//! - Timestamp (optional, after one or more spaces): `-?D+` within i64, raw:
//!   the caller applies the precision.
//!
//! # Choices (where InfluxDB's parsers differ, or where we differ from both)
//!
//! 1. **`\r\n`**: InfluxDB refuses a line ending in `\r` ("bad timestamp" /
//!    "trailing content"). We drop one `\r` before each line end, so files
//!    with Windows line endings load. No line InfluxDB accepts ends in `\r`,
//!    so this only accepts lines InfluxDB would refuse.
//! 2. **Trailing blanks**: once a space has ended the field set, we accept
//!    spaces and tabs around the timestamp or with no timestamp at all
//!    (`m f=1 `, `m f=1 \t5\t`). IOx refuses blanks without a timestamp and
//!    tabs; Go accepts most of these. A tab right after a value (`m f=1\t`) is
//!    refused, as by both.
//! 3. **Floats out of range** (`1e400`): IOx stores infinity, Go refuses; we
//!    refuse (no NaN or infinity can be written).
//! 4. **Quotes in comments**: both InfluxDB parsers split lines before seeing
//!    comments, so `# x="a` makes the next newline part of a string; Go then
//!    silently drops the next line and IOx parses it. A comment here always
//!    ends at its first newline (IOx's result for that case).
//! 5. **UTF-8**: IOx needs the whole body to be UTF-8, Go takes any bytes. We
//!    refuse only the line holding invalid UTF-8, naming its line and column;
//!    comment lines are not checked.
//! 6. **Where Go and IOx disagree** we follow IOx: tabs in names are refused
//!    (Go stores them), commas in keys and `=` in tag values are accepted (Go
//!    refuses them), `.5` and `5.` are refused (Go accepts some such forms),
//!    duplicate tags are left to the validator (Go's parser refuses them).
//! 7. **Errors** are ours: each names the physical line, the column (in
//!    characters, 1-based) and what was wrong; the wording is not InfluxDB's.
//!
//! # How it is fast
//!
//! Per line: `memchr` finds the line's end (`scan.rs`, exact InfluxDB
//! splitting only for lines holding a `"`), and an index of its delimiter
//! bytes is built 32 or 16 bytes at a time (`delimiters.rs`: AVX2 on x86_64
//! CPUs that have it, checked once per parser; else SSE2, which the x86_64
//! build guarantees; portable SWAR elsewhere; each behind one `unsafe` call
//! whose only requirement is that target feature). The same pass notes whether
//! the line is ASCII, which makes it valid UTF-8; only other lines go through
//! `str::from_utf8`. A plain line (no escapes, single spaces, the common case)
//! is then parsed by walking its delimiters (`fast.rs`); anything else, and
//! every error, goes through the general parser (`line.rs`), which is the
//! reference: a property test checks that both agree. Digits are read 8 at
//! a time, the last 16 of a float's fraction or a timestamp 16 at a time
//! in one SSE2 register (`number.rs`), and long decimal mantissas are
//! converted with a 128-bit reciprocal instead of `f64::from_str`
//! (`float.rs`). No branch depends on name or number lengths, whose
//! varying exits CPUs mispredict.
//!
//! A caller that remembers series ([`Parser::next_line_with`]: the write
//! path, whose lines mostly repeat a tag section seen earlier in the same
//! request) is shown each line's bytes before its first space; when it
//! knows them, the measurement and tags (half of a TSBS line) are neither
//! indexed nor walked, and only the fields are parsed.

mod delimiters;
mod error;
mod fast;
mod float;
mod line;
mod name;
mod number;
mod scan;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use error::{Found, InvalidValue, NamePart, ParseError, ParseErrorKind, TimestampProblem};
pub use name::{Name, StrValue};

/// The longest name or string value InfluxDB accepts, in bytes once unescaped
/// (64 KiB; IOx's limit, also documented for string fields).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// A field value, typed by its spelling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldValue<'a> {
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    String(StrValue<'a>),
}

impl FieldValue<'_> {
    /// The InfluxDB name of the value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::I64(_) => "integer",
            Self::U64(_) => "unsigned integer",
            Self::F64(_) => "float",
            Self::Bool(_) => "boolean",
            Self::String(_) => "string",
        }
    }
}

/// One parsed line. `tags` and `fields` borrow the parser's buffers: use the
/// line before asking for the next one.
#[derive(Debug, Clone, Copy)]
pub struct Line<'p, 'a> {
    /// 1-based number of the physical line where this line starts.
    pub line_number: usize,
    pub measurement: Name<'a>,
    /// In input order; duplicates are kept (the validator refuses them).
    pub tags: &'p [(Name<'a>, Name<'a>)],
    /// In input order, never empty; duplicates are kept.
    pub fields: &'p [(Name<'a>, FieldValue<'a>)],
    /// As written; the caller applies the write's precision.
    pub timestamp: Option<i64>,
}

/// A line whose measurement and tags the caller recognised (see
/// [`Parser::next_line_with`]): only its fields and timestamp were parsed.
#[derive(Debug, Clone, Copy)]
pub struct KnownLine<'p, 'a> {
    /// 1-based number of the physical line where this line starts.
    pub line_number: usize,
    /// What the caller's `known` returned for the line's tag section.
    pub series: u32,
    /// In input order, never empty; duplicates are kept.
    pub fields: &'p [(Name<'a>, FieldValue<'a>)],
    /// As written; the caller applies the write's precision.
    pub timestamp: Option<i64>,
}

/// What [`Parser::next_line_with`] returns.
#[derive(Debug, Clone, Copy)]
pub enum Parsed<'p, 'a> {
    /// A line parsed whole.
    Line(Line<'p, 'a>),
    /// A line of a series the caller already knows.
    Known(KnownLine<'p, 'a>),
}

/// Parses line protocol from a byte buffer, one line at a time.
///
/// After an error, parsing goes on with the next line, so a caller can report
/// every bad line of a request.
#[derive(Debug)]
pub struct Parser<'a> {
    input: &'a [u8],
    /// Start of the next line to parse.
    pos: usize,
    /// Physical line number of the line starting at `pos`.
    line_number: usize,
    tags: Vec<(Name<'a>, Name<'a>)>,
    fields: Vec<(Name<'a>, FieldValue<'a>)>,
    /// Scratch index of the current line, reused like `tags` and `fields`.
    delimiters: delimiters::Delimiters,
}

impl<'a> Parser<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Self {
            input,
            pos: 0,
            line_number: 1,
            tags: Vec::with_capacity(16),
            fields: Vec::with_capacity(16),
            delimiters: delimiters::Delimiters::default(),
        }
    }

    /// The next non-blank, non-comment line, or `None` at the end of input.
    #[allow(clippy::should_implement_trait)] // lending: cannot be an Iterator
    pub fn next_line(&mut self) -> Option<Result<Line<'_, 'a>, ParseError>> {
        let (start, end, line_number) = self.next_content()?;
        Some(self.parse_line(start, end, line_number))
    }

    /// [`next_line`](Self::next_line) for a caller that remembers series:
    /// `known` is shown a line's bytes before its first space (for a line
    /// with tags and no escaped space, its measurement and tags exactly),
    /// and when it recognises them (`Some(id)`) only the fields and the
    /// timestamp are parsed, and the line comes back as
    /// [`Parsed::Known`] with that id. Everything else is parsed whole.
    ///
    /// Sound as long as `known` only recognises bytes it saw as the
    /// measurement and tags of an earlier line, ending right before an
    /// unescaped space: the same bytes followed by a space parse the same
    /// way again. They are also valid UTF-8 again.
    pub fn next_line_with(
        &mut self,
        mut known: impl FnMut(&'a [u8]) -> Option<u32>,
    ) -> Option<Result<Parsed<'_, 'a>, ParseError>> {
        let (start, end, line_number) = self.next_content()?;
        let input = self.input;
        if let Some(space) = memchr::memchr(b' ', &input[start..end])
            && let Some(series) = known(&input[start..start + space])
            && let Some(timestamp) = self.plain_fields(start + space, end)
        {
            return Some(Ok(Parsed::Known(KnownLine {
                line_number,
                series,
                fields: &self.fields,
                timestamp,
            })));
        }
        Some(self.parse_line(start, end, line_number).map(Parsed::Line))
    }

    /// Steps to the next line holding something to parse: its bounds in
    /// the input (a trailing `\r` left out) and its line number.
    #[inline(always)]
    fn next_content(&mut self) -> Option<(usize, usize, usize)> {
        let input = self.input;
        loop {
            if self.pos >= input.len() {
                return None;
            }
            let start = self.pos;
            let line_number = self.line_number;
            let raw = scan::next_raw_line(input, start);
            self.pos = raw.end + 1;
            self.line_number += 1 + raw.newlines;
            if raw.comment {
                continue;
            }
            let mut end = raw.end;
            if end > start && input[end - 1] == b'\r' {
                end -= 1;
            }
            if scan::count_blanks(&input[start..end]) == end - start {
                continue;
            }
            return Some((start, end, line_number));
        }
    }

    /// Parses the fields and timestamp of `input[from..end]`, which starts
    /// at the space after a tag section, if they are plain and ASCII.
    #[inline(always)]
    fn plain_fields(&mut self, from: usize, end: usize) -> Option<Option<i64>> {
        let input = self.input;
        if !self.delimiters.index(input, from, end) {
            return None;
        }
        // SAFETY: every byte of the range is below 0x80 (the index just
        // checked them all), and ASCII is valid UTF-8.
        let text = unsafe { std::str::from_utf8_unchecked(&input[from..end]) };
        fast::parse_plain_fields(text, &self.delimiters, &mut self.fields)
    }

    /// Parses the line `input[start..end]` (non-blank, not a comment).
    #[inline(always)]
    fn parse_line(
        &mut self,
        start: usize,
        end: usize,
        line_number: usize,
    ) -> Result<Line<'_, 'a>, ParseError> {
        let input = self.input;
        let bytes = &input[start..end];
        let ascii = self.delimiters.index(input, start, end);
        let text = if ascii {
            // SAFETY: every byte of `bytes` is below 0x80 (the index
            // just checked them all), and ASCII is valid UTF-8.
            unsafe { std::str::from_utf8_unchecked(bytes) }
        } else {
            match std::str::from_utf8(bytes) {
                Ok(text) => text,
                Err(e) => {
                    let at = start + e.valid_up_to();
                    let kind = ParseErrorKind::InvalidUtf8;
                    return Err(self.error(start, line_number, at, kind));
                }
            }
        };
        let (tags, fields) = (&mut self.tags, &mut self.fields);
        let parsed = match fast::parse_plain(text, &self.delimiters, tags, fields) {
            Some(line) => Ok(line),
            None => line::parse_line(text, &self.delimiters, tags, fields),
        };
        match parsed {
            Ok((measurement, timestamp)) => Ok(Line {
                line_number,
                measurement,
                tags: &self.tags,
                fields: &self.fields,
                timestamp,
            }),
            Err(e) => {
                let (offset, kind) = e.into_parts();
                Err(self.error(start, line_number, start + offset, kind))
            }
        }
    }

    /// Locate absolute offset `at` of the logical line starting at
    /// `line_start` (physical line `line_number`) as physical line and column.
    #[cold]
    fn error(
        &self,
        line_start: usize,
        line_number: usize,
        at: usize,
        kind: ParseErrorKind,
    ) -> ParseError {
        let before = &self.input[line_start..at.min(self.input.len())];
        let newlines = memchr::memchr_iter(b'\n', before).count();
        let physical_start = memchr::memrchr(b'\n', before).map_or(0, |i| i + 1);
        // Characters, not bytes: count the bytes that start a UTF-8 sequence.
        let column = 1 + before[physical_start..]
            .iter()
            .filter(|&&b| b & 0xC0 != 0x80)
            .count();
        ParseError {
            line_number: line_number + newlines,
            column,
            kind,
        }
    }
}

/// A cheap upper-bound-ish guess of the number of lines in `input` (newline
/// bytes + 1), for sizing buffers before parsing.
pub fn count_lines_hint(input: &[u8]) -> usize {
    memchr::memchr_iter(b'\n', input).count() + 1
}
