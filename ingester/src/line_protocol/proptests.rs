//! Property tests: no input panics; every line a correct writer can produce
//! parses back to what was written; line numbers survive blank lines,
//! comments, `\r\n` and multi-line strings.

use super::{
    FieldValue, Line, Name,
    delimiters::Delimiters,
    fast, line,
    tests::{Owned, OwnedValue, parse_all},
};
use proptest::prelude::*;

/// Bytes that matter to the grammar, to reach deep states more often than
/// uniformly random bytes would.
const TRICKY: &[u8] = b" ,=\\\"\n\r\t#0123456789.eEiu-+tfTFam\0\xff\xc3\xa9";

fn tricky_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            3 => prop::sample::select(TRICKY),
            1 => any::<u8>(),
        ],
        0..200,
    )
}

/// A character for a name: mostly plain, often one that needs escaping,
/// sometimes any Unicode scalar value a name can hold.
fn name_char(allow_nul: bool) -> impl Strategy<Value = char> {
    prop_oneof![
        6 => prop::char::range('a', 'z'),
        1 => prop::sample::select(vec![' ', ',', '=', '\\', '"', '#', '\r', 'é', '😀']),
        1 => any::<char>(),
    ]
    // Tabs and newlines can never be part of a name; nor NUL of a measurement.
    .prop_filter("not representable", move |&c| {
        c != '\t' && c != '\n' && (allow_nul || c != '\0')
    })
}

fn name(allow_nul: bool) -> impl Strategy<Value = String> {
    prop::collection::vec(name_char(allow_nul), 1..10)
        .prop_map(|chars| chars.into_iter().collect::<String>())
        // InfluxDB refuses names ending in a backslash.
        .prop_filter("ends with a backslash", |s| !s.ends_with('\\'))
}

fn measurement() -> impl Strategy<Value = String> {
    // A leading `#` would make the line a comment.
    name(false).prop_filter("comment", |s| !s.starts_with('#'))
}

/// A field value and its spelling in line protocol.
fn field_value() -> impl Strategy<Value = (OwnedValue, String)> {
    prop_oneof![
        any::<i64>().prop_map(|v| (OwnedValue::I(v), format!("{v}i"))),
        any::<u64>().prop_map(|v| (OwnedValue::U(v), format!("{v}u"))),
        (
            any::<f64>().prop_filter("finite", |v| v.is_finite()),
            0..3u8
        )
            .prop_map(|(v, style)| {
                let text = match style {
                    0 => format!("{v}"),
                    1 => format!("{v:e}"),
                    _ => format!("{v:E}"),
                };
                (OwnedValue::F(v), text)
            }),
        prop::sample::select(vec![
            "t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE"
        ])
        .prop_map(|s| (OwnedValue::B(s.starts_with(['t', 'T'])), s.to_owned())),
        prop::collection::vec(
            prop_oneof![
                4 => prop::char::range('a', 'z'),
                1 => prop::sample::select(vec!['"', '\\', '\n', '\t', ' ', ',', '=', 'ß']),
                1 => any::<char>(),
            ],
            0..12,
        )
        .prop_map(|chars| {
            let s: String = chars.into_iter().collect();
            let text = format!("\"{}\"", escape(&s, &['"', '\\']));
            (OwnedValue::S(s), text)
        }),
    ]
}

fn escape(s: &str, special: &[char]) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A valid line: the expected result and its serialisation (no line ending).
fn valid_line() -> impl Strategy<Value = (Owned, String)> {
    valid_line_parts().prop_map(|(owned, head, rest)| (owned, head + &rest))
}

/// [`valid_line`], its text cut where the blanks after the tags start:
/// (expected, measurement and tags, the rest).
fn valid_line_parts() -> impl Strategy<Value = (Owned, String, String)> {
    let keys = &[',', '=', ' ', '\\'][..];
    (
        measurement(),
        prop::collection::vec((name(true), name(true)), 0..4),
        prop::collection::vec((name(true), field_value()), 1..5),
        prop::option::of(any::<i64>()),
        (0..3usize, 1..3usize, 1..3usize, 0..3usize),
    )
        .prop_map(
            move |(measurement, tags, fields, timestamp, (lead, sep1, sep2, trail))| {
                // InfluxDB's line splitter counts `=` from the first space on, so
                // after leading blanks a `=` in the measurement would make a later
                // quote in a name open a "string"; keep such lines unindented.
                let lead = if measurement.contains('=') { 0 } else { lead };
                let mut text = " ".repeat(lead);
                text.push_str(&escape(&measurement, &[',', ' ', '\\']));
                for (k, v) in &tags {
                    text.push_str(&format!(",{}={}", escape(k, keys), escape(v, keys)));
                }
                let head = std::mem::take(&mut text);
                text.push_str(&" ".repeat(sep1));
                for (i, (k, (_, spelling))) in fields.iter().enumerate() {
                    let comma = if i == 0 { "" } else { "," };
                    text.push_str(&format!("{comma}{}={spelling}", escape(k, keys)));
                }
                if let Some(ts) = timestamp {
                    text.push_str(&format!("{}{ts}", " ".repeat(sep2)));
                }
                if trail > 0 {
                    // Trailing blanks are accepted after a space.
                    text.push_str(&" ".repeat(trail));
                }
                let owned = Owned {
                    line_number: 1,
                    measurement,
                    tags,
                    fields: fields.into_iter().map(|(k, (v, _))| (k, v)).collect(),
                    timestamp,
                };
                (owned, head, text)
            },
        )
}

/// One physical-or-logical line of a multi-line input.
#[derive(Debug, Clone)]
enum Piece {
    Valid(Box<Owned>, String),
    Blank(String),
    Comment(String),
    /// A line without quotes or backslashes that fails to parse.
    Invalid(String),
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        4 => valid_line().prop_map(|(owned, text)| Piece::Valid(Box::new(owned), text)),
        1 => "[ \t]{0,3}".prop_map(Piece::Blank),
        1 => "[ \t]{0,2}#[^\n]{0,20}".prop_map(Piece::Comment),
        1 => prop::sample::select(vec!["oops", "m f=", "m f=1x", "m,t f=1", "m f=1 2 3"])
            .prop_map(|s| Piece::Invalid(s.to_owned())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(input in tricky_bytes()) {
        let results = parse_all(&input);
        // Every error points inside the input.
        let physical_lines = input.iter().filter(|&&b| b == b'\n').count() + 1;
        for error in results.iter().filter_map(|r| r.as_ref().err()) {
            prop_assert!(error.line_number >= 1 && error.line_number <= physical_lines);
            prop_assert!(error.column >= 1);
        }
    }

    #[test]
    fn valid_lines_round_trip((expected, text) in valid_line(), crlf in any::<bool>()) {
        let input = if crlf { format!("{text}\r\n") } else { text.clone() };
        let got = parse_all(input.as_bytes());
        prop_assert_eq!(got.len(), 1, "{:?} gave {:?}", text, got);
        match &got[0] {
            Ok(line) => prop_assert_eq!(line, &expected, "{:?}", text),
            Err(e) => prop_assert!(false, "{:?} failed: {}", text, e),
        }
    }

    #[test]
    fn fast_path_agrees_with_the_general_parser(
        (_, text) in valid_line(),
        noise in tricky_bytes(),
        cut in any::<prop::sample::Index>(),
    ) {
        // Valid lines, and valid lines with garbage spliced in.
        let mut mangled = text.clone().into_bytes();
        let at = cut.index(mangled.len() + 1);
        mangled.splice(at..at, noise.iter().copied().filter(|&b| b != b'\n'));
        for bytes in [text.as_bytes(), &mangled[..]] {
            let Ok(text) = std::str::from_utf8(bytes) else { continue };
            let mut delimiters = Delimiters::default();
            delimiters.index(bytes, 0, bytes.len());
            let (mut tags, mut fields) = (Vec::new(), Vec::new());
            let Some((measurement, timestamp)) =
                fast::parse_plain(text, &delimiters, &mut tags, &mut fields)
            else {
                continue;
            };
            let fast = owned(measurement, &tags, &fields, timestamp);
            let (mut tags, mut fields) = (Vec::new(), Vec::new());
            let general = line::parse_line(text, &delimiters, &mut tags, &mut fields);
            prop_assert!(general.is_ok(), "{:?}: general parser refused: {:?}", text, general);
            if let Ok((measurement, timestamp)) = general {
                prop_assert_eq!(fast, owned(measurement, &tags, &fields, timestamp), "{:?}", text);
            }
        }
    }

    /// A caller that remembers tag sections (`next_line_with`, as the
    /// write path does) gets what parsing every line whole gives: lines
    /// that reuse earlier lines' measurement and tags with other fields,
    /// blanks and timestamps, some with garbage spliced into the rest.
    #[test]
    fn remembered_tag_sections_parse_like_whole_lines(
        parts in prop::collection::vec(valid_line_parts(), 1..4),
        picks in prop::collection::vec(
            (any::<prop::sample::Index>(), any::<prop::sample::Index>(), prop::option::weighted(0.2, (tricky_bytes(), any::<prop::sample::Index>()))),
            1..12,
        ),
    ) {
        let mut input = Vec::new();
        for (head, rest, noise) in &picks {
            let (_, head, _) = head.get(&parts);
            let (_, _, rest) = rest.get(&parts);
            let mut rest = rest.clone().into_bytes();
            if let Some((noise, at)) = noise {
                let at = at.index(rest.len() + 1);
                rest.splice(at..at, noise.iter().copied().filter(|&b| b != b'\n'));
            }
            input.extend_from_slice(head.as_bytes());
            input.extend_from_slice(&rest);
            input.push(b'\n');
        }
        let whole = parse_all(&input);

        // The caller's memory: tag sections of lines parsed whole (from the
        // measurement to the end of the last tag value, as the write path
        // takes them), and what they parsed to.
        let mut seen: Vec<(Vec<u8>, Owned)> = Vec::new();
        let base = input.as_ptr() as usize;
        let mut got = Vec::new();
        let mut parser = super::Parser::new(&input);
        loop {
            let known = |section: &[u8]| {
                seen.iter().position(|(s, _)| s == section).map(|i| i as u32)
            };
            let Some(parsed) = parser.next_line_with(known) else { break };
            match parsed {
                Ok(super::Parsed::Known(line)) => {
                    let mut owned = seen[line.series as usize].1.clone();
                    let l = Line {
                        line_number: line.line_number,
                        measurement: Name::new("", super::name::Escaping::Plain),
                        tags: &[],
                        fields: line.fields,
                        timestamp: line.timestamp,
                    };
                    let rest = Owned::from(&l);
                    owned.line_number = rest.line_number;
                    owned.fields = rest.fields;
                    owned.timestamp = rest.timestamp;
                    got.push(Ok(owned));
                }
                Ok(super::Parsed::Line(line)) => {
                    let owned = Owned::from(&line);
                    if let Some((_, last)) = line.tags.last() {
                        let start = line.measurement.raw().as_ptr() as usize - base;
                        let end = last.raw().as_ptr() as usize + last.raw().len() - base;
                        seen.push((input[start..end].to_vec(), owned.clone()));
                    }
                    got.push(Ok(owned));
                }
                Err(e) => got.push(Err(e)),
            }
        }
        prop_assert_eq!(got.len(), whole.len(), "{:?}", String::from_utf8_lossy(&input));
        for (got, want) in got.iter().zip(&whole) {
            match (got, want) {
                (Ok(g), Ok(w)) => prop_assert_eq!(g, w, "{:?}", String::from_utf8_lossy(&input)),
                (Err(g), Err(w)) => prop_assert_eq!(g.to_string(), w.to_string()),
                _ => prop_assert!(false, "{:?}: got {:?}, want {:?}", String::from_utf8_lossy(&input), got, want),
            }
        }
    }

    #[test]
    fn line_numbers_survive_blanks_comments_and_crlf(
        pieces in prop::collection::vec((piece(), any::<bool>()), 0..12),
    ) {
        let mut input = String::new();
        // (line number, Some(expected) for a valid line, None for an error)
        let mut expected = Vec::new();
        let mut line_number = 1;
        for (piece, crlf) in &pieces {
            let text = match piece {
                Piece::Valid(owned, text) => {
                    let mut owned = (**owned).clone();
                    owned.line_number = line_number;
                    expected.push((line_number, Some(owned)));
                    text
                }
                Piece::Invalid(text) => {
                    expected.push((line_number, None));
                    text
                }
                Piece::Blank(text) | Piece::Comment(text) => text,
            };
            input.push_str(text);
            input.push_str(if *crlf { "\r\n" } else { "\n" });
            line_number += 1 + text.matches('\n').count();
        }
        let got = parse_all(input.as_bytes());
        prop_assert_eq!(got.len(), expected.len(), "{:?}", input);
        for (got, (line_number, want)) in got.iter().zip(&expected) {
            match (got, want) {
                (Ok(line), Some(want)) => prop_assert_eq!(line, want, "{:?}", input),
                (Err(e), None) => prop_assert_eq!(e.line_number, *line_number, "{:?}", input),
                _ => prop_assert!(false, "{:?}: got {:?}, want {:?}", input, got, want),
            }
        }
    }
}

fn owned<'a>(
    measurement: Name<'a>,
    tags: &[(Name<'a>, Name<'a>)],
    fields: &[(Name<'a>, FieldValue<'a>)],
    timestamp: Option<i64>,
) -> Owned {
    let line = Line {
        line_number: 1,
        measurement,
        tags,
        fields,
        timestamp,
    };
    // Compare raw spellings too: both paths must borrow the same bytes.
    let raw: Vec<&str> = tags
        .iter()
        .flat_map(|(k, v)| [k.raw(), v.raw()])
        .chain(fields.iter().map(|(k, _)| k.raw()))
        .collect();
    let mut owned = Owned::from(&line);
    owned.measurement = format!("{}|{}|{:?}", owned.measurement, measurement.raw(), raw);
    owned
}
