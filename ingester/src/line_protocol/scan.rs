//! Finding where each logical line ends.
//!
//! InfluxDB decides line boundaries *before* parsing a line, with a small state
//! machine (Go's `scanLine`, ported to IOx as `split_lines`): a newline ends the
//! line unless it is escaped by a backslash or lies inside a double-quoted
//! string field value. "Inside a string" is tracked approximately: a `"` only
//! toggles the quoted state after the first space of the line and only when
//! more `=` than `,` have been seen outside quotes since then (i.e. where a
//! field value is expected). We reproduce that machine exactly, because it
//! decides which bytes belong to which line and so which lines fail together.
//!
//! Cost: the exact machine runs byte by byte, so it only runs for lines that
//! contain a `"`. A line without one can only be continued by an escaped
//! newline, so one SIMD scan ([`memchr2`] for a newline or a quote) plus a
//! look at the backslashes before the newline does for the common case.

use memchr::{memchr, memchr2};

/// Where one logical line lies in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RawLine {
    /// Index of the newline ending the line, or the input length.
    pub end: usize,
    /// Newline bytes inside `start..end` (so the next line's number is
    /// `this line's + 1 + newlines`).
    pub newlines: usize,
    /// Whether this is a comment line (first non-blank byte `#`). A comment
    /// always ends at the first newline; see the module docs of `line_protocol`.
    pub comment: bool,
}

/// Locate the logical line starting at `start` (`start < input.len()`, and
/// `start` is 0 or just after a line-ending newline).
pub(super) fn next_raw_line(input: &[u8], start: usize) -> RawLine {
    let first = start + count_blanks(&input[start..]);
    if input.get(first) == Some(&b'#') {
        let end = memchr(b'\n', &input[first..]).map_or(input.len(), |off| first + off);
        return RawLine {
            end,
            newlines: 0,
            comment: true,
        };
    }

    let mut newlines = 0;
    let mut from = start;
    loop {
        let Some(off) = memchr2(b'\n', b'"', &input[from..]) else {
            return RawLine {
                end: input.len(),
                newlines,
                comment: false,
            };
        };
        let at = from + off;
        if input[at] == b'"' {
            return exact_line(input, start);
        }
        // A newline: it continues the line only if an odd number of
        // backslashes precede it (the last of them escapes it). Without a
        // quote in the line the quoted state is always false, and the first
        // backslash of a run can never itself be escaped.
        let backslashes = input[start..at]
            .iter()
            .rev()
            .take_while(|&&b| b == b'\\')
            .count();
        if backslashes % 2 == 0 {
            return RawLine {
                end: at,
                newlines,
                comment: false,
            };
        }
        newlines += 1;
        from = at + 1;
    }
}

/// The exact line-splitting state machine, run from the start of the line.
fn exact_line(input: &[u8], start: usize) -> RawLine {
    let mut quoted = false;
    let mut fields = false;
    let mut equals = 0usize;
    let mut commas = 0usize;
    let mut escaped = false;
    let mut end = input.len();
    for (i, &b) in input.iter().enumerate().skip(start) {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' => escaped = true,
            b' ' => fields = true,
            b'=' if fields && !quoted => equals += 1,
            b',' if fields && !quoted => commas += 1,
            b'"' if fields && equals > commas => quoted = !quoted,
            b'\n' if !quoted => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    let newlines = memchr::memchr_iter(b'\n', &input[start..end]).count();
    RawLine {
        end,
        newlines,
        comment: false,
    }
}

/// Number of leading spaces and tabs.
#[inline]
pub(super) fn count_blanks(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Split the whole input into (line text, newlines inside, comment).
    fn split(input: &str) -> Vec<(&str, usize, bool)> {
        let bytes = input.as_bytes();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let line = next_raw_line(bytes, pos);
            out.push((&input[pos..line.end], line.newlines, line.comment));
            pos = line.end + 1;
        }
        out
    }

    #[test]
    fn splits_like_influxdb() {
        assert_eq!(split("a\nb"), [("a", 0, false), ("b", 0, false)]);
        assert_eq!(
            split("a\n\nb\n"),
            [("a", 0, false), ("", 0, false), ("b", 0, false)]
        );
        // An escaped newline continues the line; an escaped backslash does not.
        assert_eq!(split("a\\\nb\nc"), [("a\\\nb", 1, false), ("c", 0, false)]);
        assert_eq!(split("a\\\\\nb"), [("a\\\\", 0, false), ("b", 0, false)]);
        // A newline inside a string field value belongs to the value.
        assert_eq!(
            split("m f=\"x\ny\"\nn"),
            [("m f=\"x\ny\"", 1, false), ("n", 0, false)]
        );
        assert_eq!(
            split("m f=1,g=\"x\n\ny\" 5\nn"),
            [("m f=1,g=\"x\n\ny\" 5", 2, false), ("n", 0, false)]
        );
        // An escaped quote does not open a string.
        assert_eq!(
            split("m f=\\\"\nv\"\nn"),
            [("m f=\\\"", 0, false), ("v\"", 0, false), ("n", 0, false)]
        );
        // A quote before the first space (measurement or tags) is ordinary.
        assert_eq!(
            split("m,t=\"a f=1\nn"),
            [("m,t=\"a f=1", 0, false), ("n", 0, false)]
        );
        // InfluxDB's quirk: with a comma in a field key, `=` and `,` counts
        // are equal at the quote, so it does not open a string.
        assert_eq!(
            split("m a,b=\"x\ny\""),
            [("m a,b=\"x", 0, false), ("y\"", 0, false)]
        );
    }

    #[test]
    fn comments_end_at_the_first_newline() {
        assert_eq!(
            split("# note x=\"open\nm f=1\n  # again\n"),
            [
                ("# note x=\"open", 0, true),
                ("m f=1", 0, false),
                ("  # again", 0, true)
            ]
        );
        // A `#` after other text is not a comment.
        assert_eq!(split("m #f=1"), [("m #f=1", 0, false)]);
    }
}
