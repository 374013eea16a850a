//! Parse errors: where (physical line and column) and what was wrong.
//!
//! Errors are the cold path: they may allocate (the offending name or token is
//! copied into the error, truncated to [`MAX_QUOTED_CHARS`] characters so a
//! megabyte-long garbage token cannot blow up a response body).

use std::fmt;

/// How many characters of an offending token an error message quotes.
pub(super) const MAX_QUOTED_CHARS: usize = 40;

/// One malformed line: 1-based physical line number and 1-based column, in
/// characters (Unicode scalar values) from the start of that physical line.
///
/// A logical line can span several physical lines (a newline inside a quoted
/// string field value, or an escaped newline); the position then names the
/// physical line where the problem is, not where the logical line started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line_number}, column {column}: {kind}")]
pub struct ParseError {
    pub line_number: usize,
    pub column: usize,
    pub kind: ParseErrorKind,
}

/// Which name of a line an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamePart {
    Measurement,
    TagKey,
    TagValue,
    FieldKey,
}

impl fmt::Display for NamePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Measurement => "measurement",
            Self::TagKey => "tag key",
            Self::TagValue => "tag value",
            Self::FieldKey => "field key",
        })
    }
}

/// What was wrong with a line. Names and tokens quoted here are as they appear
/// in the input (escaped), truncated to 40 characters (`MAX_QUOTED_CHARS`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    #[error("the line is not valid UTF-8")]
    InvalidUtf8,

    #[error("missing measurement name")]
    MissingMeasurement,

    /// InfluxDB refuses a name whose *unescaped* value ends in `\` (so `a\\` is
    /// refused too, not only a dangling `a\` at the end of the line).
    #[error("{0} may not end with a backslash")]
    EndsWithBackslash(NamePart),

    #[error("{part} is {len} bytes long; the limit is {limit} bytes", limit = super::MAX_VALUE_BYTES)]
    NameTooLong { part: NamePart, len: usize },

    /// The measurement or tag set is followed by something other than a space
    /// (e.g. a tab, which InfluxDB does not accept as a separator).
    #[error("expected a space before the field set, found {found}")]
    ExpectedSpace { found: Found },

    #[error("missing tag key")]
    MissingTagKey,

    #[error("tag key `{key}` is not followed by `=` and a value")]
    MissingTagEquals { key: String },

    #[error("missing value for tag `{key}`")]
    MissingTagValue { key: String },

    #[error("no fields were provided")]
    MissingFields,

    #[error("missing field key")]
    MissingFieldKey,

    #[error("field key `{key}` is not followed by `=` and a value")]
    MissingFieldEquals { key: String },

    #[error("missing value for field `{field}`")]
    MissingFieldValue { field: String },

    #[error("invalid field value for field `{field}`: {reason}")]
    InvalidFieldValue { field: String, reason: InvalidValue },

    #[error("unterminated string value for field `{field}` (no closing `\"`)")]
    UnterminatedString { field: String },

    #[error("invalid timestamp `{token}`: {reason}")]
    InvalidTimestamp {
        token: String,
        reason: TimestampProblem,
    },

    #[error("unexpected content after the timestamp: `{found}`")]
    TrailingContent { found: String },
}

/// Why a field value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidValue {
    #[error("`{0}` is out of range for a 64-bit signed integer")]
    IntegerOutOfRange(String),
    #[error("`{0}` is out of range for a 64-bit unsigned integer")]
    UnsignedOutOfRange(String),
    #[error("`{0}` is out of range for a 64-bit float")]
    FloatOutOfRange(String),
    #[error("`{0}` is not a valid number")]
    InvalidNumber(String),
    #[error("`{0}` is not a valid boolean (t, T, true, True, TRUE, f, F, false, False, FALSE)")]
    InvalidBoolean(String),
    #[error("`{0}` is not a number, a boolean or a double-quoted string")]
    Unrecognised(String),
    #[error("unexpected {0} after the closing quote")]
    AfterString(Found),
    #[error("string value is {0} bytes long; the limit is {limit} bytes", limit = super::MAX_VALUE_BYTES)]
    StringTooLong(usize),
}

/// Why a timestamp was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimestampProblem {
    #[error("not an integer")]
    NotAnInteger,
    #[error("out of range for a 64-bit signed integer")]
    OutOfRange,
}

/// A character found where another was expected, printed readably (control
/// characters by name, the end of the line as such).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    EndOfLine,
    Char(char),
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EndOfLine => f.write_str("the end of the line"),
            Self::Char('\t') => f.write_str("a tab"),
            Self::Char('\n') => f.write_str("a newline"),
            Self::Char('\0') => f.write_str("a NUL byte"),
            Self::Char(c) if c.is_control() => write!(f, "the control character {c:?}"),
            Self::Char(c) => write!(f, "`{c}`"),
        }
    }
}

/// Copy `s` for an error message, keeping at most [`MAX_QUOTED_CHARS`] characters.
pub(super) fn quote(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTED_CHARS) {
        None => s.to_owned(),
        Some((cut, _)) => format!("{}...", &s[..cut]),
    }
}
