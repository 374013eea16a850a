//! Zero-copy views of names and string values as they appear in the input.
//!
//! The parser never unescapes eagerly: a [`Name`] or [`StrValue`] is the raw
//! slice of the input plus a note saying whether it holds any escape sequence
//! that changes its value. Almost all real names have none, so
//! [`Name::unescaped`] is a borrow; comparisons ([`PartialEq<str>`]) and
//! [`Display`](fmt::Display) walk the escapes without allocating.
//!
//! Escape rules (InfluxDB's; see the module docs of `line_protocol`):
//! - measurement: `\,` `\ ` `\\` stand for the second character;
//! - tag keys, tag values, field keys: `\,` `\=` `\ ` `\\`;
//! - string field values: `\"` and `\\`;
//! - a backslash before any other character is an ordinary character, so
//!   `a\tb` (backslash, `t`) stays `a\tb`.

use std::{borrow::Cow, fmt};

/// Which escape rules apply to a raw slice, or `Plain` when the raw slice has
/// no escape sequence that changes it (raw == unescaped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Escaping {
    Plain,
    Measurement,
    Key,
    Str,
}

impl Escaping {
    /// Whether `\` followed by `b` stands for `b` under these rules.
    #[inline]
    pub(super) fn escapes(self, b: u8) -> bool {
        match self {
            Self::Plain => false,
            Self::Measurement => matches!(b, b',' | b' ' | b'\\'),
            Self::Key => matches!(b, b',' | b'=' | b' ' | b'\\'),
            Self::Str => matches!(b, b'"' | b'\\'),
        }
    }
}

/// A measurement name, tag key, tag value or field key, borrowed from the
/// input exactly as written (escaped). Valid UTF-8 by construction.
#[derive(Clone, Copy)]
pub struct Name<'a> {
    raw: &'a str,
    escaping: Escaping,
}

/// A string field value without its surrounding quotes, borrowed from the
/// input exactly as written (escaped). May contain newlines.
#[derive(Clone, Copy)]
pub struct StrValue<'a> {
    raw: &'a str,
    escaping: Escaping,
}

macro_rules! escaped_view {
    ($ty:ident) => {
        impl<'a> $ty<'a> {
            #[inline]
            pub(super) fn new(raw: &'a str, escaping: Escaping) -> Self {
                Self { raw, escaping }
            }

            /// The text as it appears in the input, escapes included.
            #[inline]
            pub fn raw(&self) -> &'a str {
                self.raw
            }

            /// Whether the raw text holds an escape sequence, i.e. whether
            /// [`Self::unescaped`] differs from [`Self::raw`].
            #[inline]
            pub fn has_escapes(&self) -> bool {
                self.escaping != Escaping::Plain
            }

            /// The logical value; borrows unless the raw text holds escapes.
            #[inline]
            pub fn unescaped(&self) -> Cow<'a, str> {
                if self.escaping == Escaping::Plain {
                    return Cow::Borrowed(self.raw);
                }
                Cow::Owned(unescape(self.raw, self.escaping))
            }

            /// Length in bytes of the logical (unescaped) value.
            pub fn unescaped_len(&self) -> usize {
                if self.escaping == Escaping::Plain {
                    return self.raw.len();
                }
                let mut len = 0;
                for_each_chunk(self.raw, self.escaping, |chunk| len += chunk.len());
                len
            }

            fn unescaped_bytes(&self) -> Unescape<'a> {
                Unescape {
                    rest: self.raw.as_bytes(),
                    escaping: self.escaping,
                }
            }
        }

        impl From<&'static str> for $ty<'static> {
            /// A value with no escapes: `s` is both the raw and the logical text.
            /// Meant for tests and for building expected values.
            fn from(s: &'static str) -> Self {
                Self::new(s, Escaping::Plain)
            }
        }

        impl PartialEq<str> for $ty<'_> {
            /// Compares the logical (unescaped) value, without allocating.
            fn eq(&self, other: &str) -> bool {
                if self.escaping == Escaping::Plain {
                    self.raw == other
                } else {
                    self.unescaped_bytes().eq(other.bytes())
                }
            }
        }

        impl PartialEq<&str> for $ty<'_> {
            fn eq(&self, other: &&str) -> bool {
                *self == **other
            }
        }

        impl PartialEq for $ty<'_> {
            /// Compares logical values: `a\,b` equals a plain `a,b`.
            fn eq(&self, other: &Self) -> bool {
                match (self.escaping, other.escaping) {
                    (Escaping::Plain, Escaping::Plain) => self.raw == other.raw,
                    (Escaping::Plain, _) => *other == *self.raw,
                    _ => self.unescaped_bytes().eq(other.unescaped_bytes()),
                }
            }
        }

        impl Eq for $ty<'_> {}

        impl fmt::Display for $ty<'_> {
            /// Writes the logical (unescaped) value.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                if self.escaping == Escaping::Plain {
                    return f.write_str(self.raw);
                }
                let mut result = Ok(());
                for_each_chunk(self.raw, self.escaping, |chunk| {
                    if result.is_ok() {
                        result = f.write_str(chunk);
                    }
                });
                result
            }
        }

        impl fmt::Debug for $ty<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.unescaped(), f)
            }
        }
    };
}

escaped_view!(Name);
escaped_view!(StrValue);

/// The unescaped value of `raw` (out of line: the hot path is the
/// borrow in `unescaped`, called for every name of every line).
#[cold]
#[inline(never)]
fn unescape(raw: &str, escaping: Escaping) -> String {
    let mut out = String::with_capacity(raw.len());
    for_each_chunk(raw, escaping, |chunk| out.push_str(chunk));
    out
}

/// Calls `emit` with consecutive pieces of the unescaped value of `raw`.
///
/// Every cut is next to an ASCII byte (a backslash or the character it
/// escapes), so every piece is on a UTF-8 character boundary.
fn for_each_chunk(raw: &str, escaping: Escaping, mut emit: impl FnMut(&str)) {
    let bytes = raw.as_bytes();
    let mut start = 0;
    let mut search = 0;
    while let Some(offset) = memchr::memchr(b'\\', &bytes[search..]) {
        let at = search + offset;
        match bytes.get(at + 1) {
            Some(&next) if escaping.escapes(next) => {
                // Emit up to the backslash, then restart at the escaped byte
                // so it is kept and never re-read as an escape.
                emit(&raw[start..at]);
                start = at + 1;
                search = at + 2;
            }
            // Not an escape: the backslash is an ordinary character.
            _ => search = at + 1,
        }
    }
    emit(&raw[start..]);
}

/// The unescaped bytes of a raw value, one at a time.
struct Unescape<'a> {
    rest: &'a [u8],
    escaping: Escaping,
}

impl Iterator for Unescape<'_> {
    type Item = u8;

    #[inline]
    fn next(&mut self) -> Option<u8> {
        let (&b, tail) = self.rest.split_first()?;
        if b == b'\\'
            && let Some((&next, after)) = tail.split_first()
            && self.escaping.escapes(next)
        {
            self.rest = after;
            return Some(next);
        }
        self.rest = tail;
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(raw: &'static str, escaping: Escaping) -> Name<'static> {
        Name::new(raw, escaping)
    }

    #[test]
    fn unescape_rules_differ_by_kind() {
        // `\=` is an escape in keys but an ordinary pair in measurements.
        assert_eq!(name(r"a\=b", Escaping::Key).unescaped(), "a=b");
        assert_eq!(name(r"a\=b", Escaping::Measurement).unescaped(), r"a\=b");
        assert_eq!(
            name(r"a\,b\ c\\d", Escaping::Measurement).unescaped(),
            r"a,b c\d"
        );
        // Unknown escapes keep the backslash.
        assert_eq!(name(r"a\tb\", Escaping::Key).unescaped(), r"a\tb\");
        // `\\,` is an escaped backslash followed by a comma.
        assert_eq!(name(r"\\\,", Escaping::Key).unescaped(), r"\,");
        let s = StrValue::new(r#"say \"hi\" \\ \n"#, Escaping::Str);
        assert_eq!(s.unescaped(), r#"say "hi" \ \n"#);
        assert_eq!(s.unescaped_len(), s.unescaped().len());
    }

    #[test]
    fn comparisons_and_display_use_the_logical_value() {
        let escaped = name(r"us\ west\,1", Escaping::Key);
        assert!(escaped == "us west,1");
        assert!(escaped != r"us\ west\,1");
        assert!(escaped != "us west,");
        assert!(escaped != "us west,12");
        assert_eq!(escaped, Name::from("us west,1"));
        assert_eq!(Name::from("us west,1"), escaped);
        assert_eq!(escaped.to_string(), "us west,1");
        assert_eq!(format!("{escaped:?}"), "\"us west,1\"");
        assert!(matches!(escaped.unescaped(), Cow::Owned(_)));
        assert!(matches!(
            Name::from("plain").unescaped(),
            Cow::Borrowed("plain")
        ));
        assert_eq!(escaped.raw(), r"us\ west\,1");
        assert!(escaped.has_escapes());
        assert!(!Name::from("plain").has_escapes());
    }

    #[test]
    fn multibyte_text_survives_unescaping() {
        let n = name(r"ü\ ß\é", Escaping::Key);
        assert_eq!(n.unescaped(), r"ü ß\é");
        assert!(n == r"ü ß\é");
    }
}
