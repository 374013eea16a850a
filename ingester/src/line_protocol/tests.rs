//! Table tests: every rule of the module docs, with exact expected values and
//! exact error positions.

use super::*;

/// An expected field value. Floats compare by bits (so `-0.0 != 0.0`).
#[derive(Debug, Clone, Copy)]
pub(super) enum V {
    I(i64),
    U(u64),
    F(f64),
    B(bool),
    S(&'static str),
}

/// A parsed line with every name unescaped, for comparisons.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Owned {
    pub line_number: usize,
    pub measurement: String,
    pub tags: Vec<(String, String)>,
    pub fields: Vec<(String, OwnedValue)>,
    pub timestamp: Option<i64>,
}

#[derive(Debug, Clone)]
pub(super) enum OwnedValue {
    I(i64),
    U(u64),
    F(f64),
    B(bool),
    S(String),
}

impl PartialEq for OwnedValue {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::I(a), Self::I(b)) => a == b,
            (Self::U(a), Self::U(b)) => a == b,
            (Self::F(a), Self::F(b)) => a.to_bits() == b.to_bits(),
            (Self::B(a), Self::B(b)) => a == b,
            (Self::S(a), Self::S(b)) => a == b,
            _ => false,
        }
    }
}

impl From<V> for OwnedValue {
    fn from(v: V) -> Self {
        match v {
            V::I(v) => Self::I(v),
            V::U(v) => Self::U(v),
            V::F(v) => Self::F(v),
            V::B(v) => Self::B(v),
            V::S(v) => Self::S(v.to_owned()),
        }
    }
}

impl From<&Line<'_, '_>> for Owned {
    fn from(line: &Line<'_, '_>) -> Self {
        Self {
            line_number: line.line_number,
            measurement: line.measurement.unescaped().into_owned(),
            tags: line
                .tags
                .iter()
                .map(|(k, v)| (k.unescaped().into_owned(), v.unescaped().into_owned()))
                .collect(),
            fields: line
                .fields
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        FieldValue::I64(v) => OwnedValue::I(*v),
                        FieldValue::U64(v) => OwnedValue::U(*v),
                        FieldValue::F64(v) => OwnedValue::F(*v),
                        FieldValue::Bool(v) => OwnedValue::B(*v),
                        FieldValue::String(s) => OwnedValue::S(s.unescaped().into_owned()),
                    };
                    (k.unescaped().into_owned(), v)
                })
                .collect(),
            timestamp: line.timestamp,
        }
    }
}

/// Parse every line of `input`, unescaped.
pub(super) fn parse_all(input: &[u8]) -> Vec<Result<Owned, ParseError>> {
    let mut parser = Parser::new(input);
    let mut out = Vec::new();
    while let Some(line) = parser.next_line() {
        out.push(line.as_ref().map(Owned::from).map_err(Clone::clone));
    }
    out
}

fn expect(
    measurement: &str,
    tags: &[(&str, &str)],
    fields: &[(&str, V)],
    timestamp: Option<i64>,
) -> Owned {
    Owned {
        line_number: 1,
        measurement: measurement.to_owned(),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).into()))
            .collect(),
        timestamp,
    }
}

/// One-line inputs and what they parse to.
#[test]
fn valid_lines() {
    use V::*;
    let f = |v| [("f", v)];
    #[rustfmt::skip]
    let cases: Vec<(&str, Owned)> = vec![
        ("cpu,host=A,region=west usage_system=64.2 1590488773254420000",
            expect("cpu", &[("host", "A"), ("region", "west")], &[("usage_system", F(64.2))], Some(1590488773254420000))),
        ("cpu f=1i", expect("cpu", &[], &f(I(1)), None)),
        // Integers and their range.
        ("m f=-1i", expect("m", &[], &f(I(-1)), None)),
        ("m f=9223372036854775807i", expect("m", &[], &f(I(i64::MAX)), None)),
        ("m f=-9223372036854775808i", expect("m", &[], &f(I(i64::MIN)), None)),
        ("m f=000000000000000000000042i", expect("m", &[], &f(I(42)), None)),
        ("m f=0u", expect("m", &[], &f(U(0)), None)),
        ("m f=18446744073709551615u", expect("m", &[], &f(U(u64::MAX)), None)),
        // Floats.
        ("m f=1", expect("m", &[], &f(F(1.0)), None)),
        ("m f=-1.5", expect("m", &[], &f(F(-1.5)), None)),
        ("m f=0.1", expect("m", &[], &f(F(0.1)), None)),
        ("m f=1e3", expect("m", &[], &f(F(1000.0)), None)),
        ("m f=-1.5E-3", expect("m", &[], &f(F(-0.0015)), None)),
        ("m f=2E+10", expect("m", &[], &f(F(2e10)), None)),
        ("m f=1.234456e+06", expect("m", &[], &f(F(1234456.0)), None)),
        ("m f=-1e-0", expect("m", &[], &f(F(-1.0)), None)),
        ("m f=-0", expect("m", &[], &f(F(-0.0)), None)),
        ("m f=007.50", expect("m", &[], &f(F(7.5)), None)),
        ("m f=3.141592653589793238462643383279", expect("m", &[], &f(F(std::f64::consts::PI)), None)),
        ("m f=1.7976931348623157e308", expect("m", &[], &f(F(f64::MAX)), None)),
        ("m f=5e-324", expect("m", &[], &f(F(5e-324)), None)),
        ("m f=1e-400", expect("m", &[], &f(F(0.0)), None)),
        ("m f=9007199254740993", expect("m", &[], &f(F(9007199254740992.0)), None)),
        // Booleans: exactly the ten spellings.
        ("m a=t,b=T,c=true,d=True,e=TRUE", expect("m", &[], &[("a", B(true)), ("b", B(true)), ("c", B(true)), ("d", B(true)), ("e", B(true))], None)),
        ("m a=f,b=F,c=false,d=False,e=FALSE", expect("m", &[], &[("a", B(false)), ("b", B(false)), ("c", B(false)), ("d", B(false)), ("e", B(false))], None)),
        // Strings.
        (r#"m f="""#, expect("m", &[], &f(S("")), None)),
        (r#"m f="str val, with = signs" 1"#, expect("m", &[], &f(S("str val, with = signs")), Some(1))),
        (r#"m f="The \"string\" val""#, expect("m", &[], &f(S(r#"The "string" val"#)), None)),
        (r#"m f="too hot\cold""#, expect("m", &[], &f(S(r"too hot\cold")), None)),
        (r#"m f="too hot\\cold""#, expect("m", &[], &f(S(r"too hot\cold")), None)),
        (r#"m f="too hot\\\cold""#, expect("m", &[], &f(S(r"too hot\\cold")), None)),
        (r#"m f="ends in \\""#, expect("m", &[], &f(S(r"ends in \")), None)),
        ("m f=\"two\nlines\"", expect("m", &[], &f(S("two\nlines")), None)),
        ("m f=\"tab\there\"", expect("m", &[], &f(S("tab\there")), None)),
        // Mixed types keep their order.
        (r#"foo asdf=23.1,bar=-5i,qux=9u,baz="the string",frab=false 1234"#,
            expect("foo", &[], &[("asdf", F(23.1)), ("bar", I(-5)), ("qux", U(9)), ("baz", S("the string")), ("frab", B(false))], Some(1234))),
        // Measurement escapes: `\,` `\ ` `\\`; others keep the backslash.
        (r"wea\,ther f=1", expect("wea,ther", &[], &f(F(1.0)), None)),
        (r"wea\ ther f=1", expect("wea ther", &[], &f(F(1.0)), None)),
        (r"\\wea\\ther f=1", expect(r"\wea\ther", &[], &f(F(1.0)), None)),
        (r"\wea\ther f=1", expect(r"\wea\ther", &[], &f(F(1.0)), None)),
        (r"a\=b f=1", expect(r"a\=b", &[], &f(F(1.0)), None)),
        (r"\#cpu f=1", expect(r"\#cpu", &[], &f(F(1.0)), None)),
        ("a=b f=1", expect("a=b", &[], &f(F(1.0)), None)),
        ("m\\\tx f=1", expect("m\\\tx", &[], &f(F(1.0)), None)),
        // Key and tag value escapes: `\,` `\=` `\ ` `\\`.
        (r"m,t\=k\,1\ x=v\,a\=l\ ue\\x f\ 1\=\,=1i", expect("m", &[("t=k,1 x", r"v,a=l ue\x")], &[("f 1=,", I(1))], None)),
        (r"m,k=a\tb f=1", expect("m", &[("k", r"a\tb")], &f(F(1.0)), None)),
        // Commas in keys and `=` in tag values are ordinary (IOx).
        ("m,a,b=c f=1", expect("m", &[("a,b", "c")], &f(F(1.0)), None)),
        ("m,a=b=c f=1", expect("m", &[("a", "b=c")], &f(F(1.0)), None)),
        ("m x,y=1", expect("m", &[], &[("x,y", F(1.0))], None)),
        ("m,t=\"q\" f=1", expect("m", &[("t", "\"q\"")], &f(F(1.0)), None)),
        ("m,t=a\0b f=1", expect("m", &[("t", "a\0b")], &f(F(1.0)), None)),
        ("温度,城市=北京 值=1i", expect("温度", &[("城市", "北京")], &[("值", I(1))], None)),
        // Whitespace.
        ("  measurement  a=1i  123  ", expect("measurement", &[], &[("a", I(1))], Some(123))),
        ("\t m f=1", expect("m", &[], &f(F(1.0)), None)),
        ("m f=1 ", expect("m", &[], &f(F(1.0)), None)),
        ("m f=1 \t", expect("m", &[], &f(F(1.0)), None)),
        ("m f=1 \t5\t ", expect("m", &[], &f(F(1.0)), Some(5))),
        ("m f=1 5\r", expect("m", &[], &f(F(1.0)), Some(5))),
        // Timestamps.
        ("m f=1 -123", expect("m", &[], &f(F(1.0)), Some(-123))),
        ("m f=1 -0", expect("m", &[], &f(F(1.0)), Some(0))),
        ("m f=1 0009", expect("m", &[], &f(F(1.0)), Some(9))),
        ("m f=1 9223372036854775807", expect("m", &[], &f(F(1.0)), Some(i64::MAX))),
        ("m f=1 -9223372036854775808", expect("m", &[], &f(F(1.0)), Some(i64::MIN))),
        // Exactly at the length limit.
        (&*Box::leak(format!("{} f=1", "a".repeat(MAX_VALUE_BYTES)).into_boxed_str()),
            expect(&"a".repeat(MAX_VALUE_BYTES), &[], &f(F(1.0)), None)),
        (&*Box::leak(format!("m f=\"{}\"", r"\\".repeat(MAX_VALUE_BYTES)).into_boxed_str()),
            expect("m", &[], &[("f", V::S(Box::leak(r"\".repeat(MAX_VALUE_BYTES).into_boxed_str())))], None)),
    ];
    for (input, expected) in cases {
        let got = parse_all(input.as_bytes());
        assert_eq!(got.len(), 1, "{input:?} gave {got:?}");
        match &got[0] {
            Ok(line) => assert_eq!(line, &expected, "input {input:?}"),
            Err(e) => panic!("{input:?} failed: {e}"),
        }
    }
}

/// One-line inputs InfluxDB refuses, with the error's column and kind.
#[test]
fn invalid_lines() {
    use InvalidValue as IV;
    use ParseErrorKind as K;
    let s = |s: &str| s.to_owned();
    let bad = |field: &str, reason| K::InvalidFieldValue {
        field: s(field),
        reason,
    };
    #[rustfmt::skip]
    let cases: Vec<(&[u8], usize, ParseErrorKind)> = vec![
        // Measurement and tag set.
        (b"cpu", 4, K::MissingFields),
        (b"cpu ", 5, K::MissingFields),
        (b"cpu   \t", 7, K::MissingFieldKey),
        (b",t=1 f=1", 1, K::MissingMeasurement),
        (b"  ,t=1 f=1", 3, K::MissingMeasurement),
        (b"\0 f=1", 1, K::MissingMeasurement),
        (b"cpu\tf=1", 4, K::ExpectedSpace { found: Found::Char('\t') }),
        (b"cpu\0 f=1", 4, K::ExpectedSpace { found: Found::Char('\0') }),
        (b"cpu, f=1", 5, K::MissingTagKey),
        (b"cpu,", 5, K::MissingTagKey),
        (b"cpu,t f=1", 6, K::MissingTagEquals { key: s("t") }),
        (b"cpu,t", 6, K::MissingTagEquals { key: s("t") }),
        (b"cpu,=v f=1", 5, K::MissingTagKey),
        (b"cpu,t= f=1", 7, K::MissingTagValue { key: s("t") }),
        (b"cpu,t=,u=1 f=1", 7, K::MissingTagValue { key: s("t") }),
        (b"cpu,t=1, f=1", 9, K::MissingTagKey),
        (b"cpu,t=1", 8, K::MissingFields),
        (b"cpu,t=1\tf=1", 8, K::ExpectedSpace { found: Found::Char('\t') }),
        // Backslashes at the end of a name.
        (b"cpu\\", 4, K::EndsWithBackslash(NamePart::Measurement)),
        (b"cpu\\\\ f=1", 5, K::EndsWithBackslash(NamePart::Measurement)),
        (b"cpu,t\\\\=v f=1", 7, K::EndsWithBackslash(NamePart::TagKey)),
        (b"cpu,t=v\\\\ f=1", 9, K::EndsWithBackslash(NamePart::TagValue)),
        (b"cpu,t=v\\", 8, K::EndsWithBackslash(NamePart::TagValue)),
        (b"cpu f\\\\=1", 7, K::EndsWithBackslash(NamePart::FieldKey)),
        // Field set.
        (b"cpu f", 6, K::MissingFieldEquals { key: s("f") }),
        (b"cpu f g=1", 6, K::MissingFieldEquals { key: s("f") }),
        (b"cpu f=", 7, K::MissingFieldValue { field: s("f") }),
        (b"cpu f=,g=1", 7, K::MissingFieldValue { field: s("f") }),
        (b"cpu f= 1", 7, K::MissingFieldValue { field: s("f") }),
        (b"cpu =1", 5, K::MissingFieldKey),
        (b"cpu f=1,", 9, K::MissingFieldKey),
        (b"cpu f=1,=2", 9, K::MissingFieldKey),
        // Numbers.
        (b"cpu f=9223372036854775808i", 7, bad("f", IV::IntegerOutOfRange(s("9223372036854775808i")))),
        (b"cpu f=-9223372036854775809i", 7, bad("f", IV::IntegerOutOfRange(s("-9223372036854775809i")))),
        (b"cpu f=99999999999999999999999i", 7, bad("f", IV::IntegerOutOfRange(s("99999999999999999999999i")))),
        (b"cpu f=18446744073709551616u", 7, bad("f", IV::UnsignedOutOfRange(s("18446744073709551616u")))),
        (b"cpu f=-1u", 7, bad("f", IV::InvalidNumber(s("-1u")))),
        (b"cpu f=1e400", 7, bad("f", IV::FloatOutOfRange(s("1e400")))),
        (b"cpu f=-1e400", 7, bad("f", IV::FloatOutOfRange(s("-1e400")))),
        (b"cpu f=.5", 7, bad("f", IV::Unrecognised(s(".5")))),
        (b"cpu f=+5", 7, bad("f", IV::Unrecognised(s("+5")))),
        (b"cpu f=NaN", 7, bad("f", IV::Unrecognised(s("NaN")))),
        (b"cpu f=inf", 7, bad("f", IV::Unrecognised(s("inf")))),
        (b"cpu f=5.", 7, bad("f", IV::InvalidNumber(s("5.")))),
        (b"cpu f=1.5.3", 7, bad("f", IV::InvalidNumber(s("1.5.3")))),
        (b"cpu f=1e", 7, bad("f", IV::InvalidNumber(s("1e")))),
        (b"cpu f=1e+", 7, bad("f", IV::InvalidNumber(s("1e+")))),
        (b"cpu f=1.5i", 7, bad("f", IV::InvalidNumber(s("1.5i")))),
        (b"cpu f=1e5i", 7, bad("f", IV::InvalidNumber(s("1e5i")))),
        (b"cpu f=1ii", 7, bad("f", IV::InvalidNumber(s("1ii")))),
        (b"cpu f=12x", 7, bad("f", IV::InvalidNumber(s("12x")))),
        (b"cpu f=-", 7, bad("f", IV::InvalidNumber(s("-")))),
        (b"cpu f=--1", 7, bad("f", IV::InvalidNumber(s("--1")))),
        (b"cpu f=1\t", 7, bad("f", IV::InvalidNumber(s("1\t")))),
        (b"cpu f=1\t2", 7, bad("f", IV::InvalidNumber(s("1\t2")))),
        (b"cpu f=1,g=2x 5", 11, bad("g", IV::InvalidNumber(s("2x")))),
        // Booleans and other words.
        (b"cpu f=tRUE", 7, bad("f", IV::InvalidBoolean(s("tRUE")))),
        (b"cpu f=truex", 7, bad("f", IV::InvalidBoolean(s("truex")))),
        (b"cpu f=yes", 7, bad("f", IV::Unrecognised(s("yes")))),
        (b"cpu f=\tt", 7, bad("f", IV::Unrecognised(s("\tt")))),
        // Strings.
        (b"cpu f=\"abc", 7, K::UnterminatedString { field: s("f") }),
        (b"cpu f=\"a\\\"", 7, K::UnterminatedString { field: s("f") }),
        (b"cpu f=\"abc\"x", 12, bad("f", IV::AfterString(Found::Char('x')))),
        (b"cpu f=\"abc\"\t", 12, bad("f", IV::AfterString(Found::Char('\t')))),
        // Timestamps and what follows.
        (b"cpu f=1 abc", 9, K::InvalidTimestamp { token: s("abc"), reason: TimestampProblem::NotAnInteger }),
        (b"cpu f=1 1.5", 9, K::InvalidTimestamp { token: s("1.5"), reason: TimestampProblem::NotAnInteger }),
        (b"cpu f=1 -", 9, K::InvalidTimestamp { token: s("-"), reason: TimestampProblem::NotAnInteger }),
        (b"cpu f=1 +5", 9, K::InvalidTimestamp { token: s("+5"), reason: TimestampProblem::NotAnInteger }),
        (b"cpu f=1 5\r\r", 9, K::InvalidTimestamp { token: s("5\r"), reason: TimestampProblem::NotAnInteger }),
        (b"cpu f=1 9223372036854775808", 9, K::InvalidTimestamp { token: s("9223372036854775808"), reason: TimestampProblem::OutOfRange }),
        (b"cpu f=1 -99999999999999999999", 9, K::InvalidTimestamp { token: s("-99999999999999999999"), reason: TimestampProblem::OutOfRange }),
        (b"cpu f=1 123 456", 13, K::TrailingContent { found: s("456") }),
        (b"cpu f=1 123\tx", 13, K::TrailingContent { found: s("x") }),
        // Encoding: the column is in characters.
        (b"cpu f=\"\xff\"", 8, K::InvalidUtf8),
        ("é,ü=ö f=\"ß".as_bytes(), 9, K::UnterminatedString { field: s("f") }),
    ];
    for (input, column, kind) in cases {
        let got = parse_all(input);
        let expected = ParseError {
            line_number: 1,
            column,
            kind,
        };
        assert_eq!(
            got,
            [Err(expected)],
            "input {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn length_limits() {
    let long = "a".repeat(MAX_VALUE_BYTES + 1);
    let cases = [
        (format!("{long} f=1"), 1, NamePart::Measurement),
        (format!("m,{long}=v f=1"), 3, NamePart::TagKey),
        (format!("m,t={long} f=1"), 5, NamePart::TagValue),
        (format!("m {long}=1"), 3, NamePart::FieldKey),
    ];
    for (input, column, part) in cases {
        let kind = ParseErrorKind::NameTooLong {
            part,
            len: MAX_VALUE_BYTES + 1,
        };
        let expected = ParseError {
            line_number: 1,
            column,
            kind,
        };
        assert_eq!(parse_all(input.as_bytes()), [Err(expected)], "{part}");
    }
    // Escapes count once: 65536 escaped spaces are 65536 bytes.
    let escaped = format!("m,t={} f=1", r"\ ".repeat(MAX_VALUE_BYTES));
    assert!(parse_all(escaped.as_bytes())[0].is_ok());

    let input = format!("m f=\"{long}\"");
    let reason = InvalidValue::StringTooLong(MAX_VALUE_BYTES + 1);
    let kind = ParseErrorKind::InvalidFieldValue {
        field: "f".into(),
        reason,
    };
    let expected = ParseError {
        line_number: 1,
        column: 5,
        kind,
    };
    assert_eq!(parse_all(input.as_bytes()), [Err(expected)]);
}

#[test]
fn blank_and_comment_lines_yield_nothing() {
    for input in [
        "",
        "\n",
        "\n\n\n",
        "   \t  ",
        "\r\n\r\n",
        "# comment",
        "  # c\n\t#x=\"1\n",
    ] {
        assert_eq!(parse_all(input.as_bytes()), [], "{input:?}");
    }
    // Comments and invalid UTF-8 in them are skipped.
    assert_eq!(
        parse_all(b"# \xff\xfe\nm f=1")[0]
            .as_ref()
            .map(|l| l.line_number),
        Ok(2)
    );
}

#[test]
fn line_numbers_count_every_physical_line() {
    let input = "# header\r\n\
                 \r\n\
                 a f=1i 1\r\n\
                 \n\
                 b f=\"two\nlines\",g=2i 2\n\
                 \t\n\
                 c,t=x\\\ny f=3i\r\n\
                 bad f=\n\
                 # x=\"quote in a comment\n\
                 d f=4i";
    let got = parse_all(input.as_bytes());
    let summary: Vec<_> = got
        .iter()
        .map(|r| match r {
            Ok(l) => (l.line_number, l.measurement.clone()),
            Err(e) => (e.line_number, format!("error at column {}", e.column)),
        })
        .collect();
    assert_eq!(
        summary,
        [
            (3, "a".to_owned()),
            (5, "b".to_owned()),
            (8, "c".to_owned()),
            (10, "error at column 7".to_owned()),
            (12, "d".to_owned()),
        ]
    );
    let c = got[2].as_ref().expect("line c parses");
    assert_eq!(c.tags, [("t".to_owned(), "x\\\ny".to_owned())]);
}

#[test]
fn errors_inside_multi_line_strings_name_the_physical_line() {
    let got = parse_all(b"a f=1\nb f=\"x\ny\" oops\nc f=1");
    let expected = ParseError {
        line_number: 3,
        column: 4,
        kind: ParseErrorKind::InvalidTimestamp {
            token: "oops".into(),
            reason: TimestampProblem::NotAnInteger,
        },
    };
    assert_eq!(got.len(), 3);
    assert_eq!(got[1], Err(expected));
    assert_eq!(got[2].as_ref().map(|l| l.line_number), Ok(4));
}

#[test]
fn parsing_continues_after_a_bad_line() {
    let got = parse_all(b"foo,t=1 a=23.1.22,b=4\nfoo,t=2 a=22.1,b=5i");
    assert!(got[0].is_err());
    let second = got[1].as_ref().expect("second line parses");
    assert_eq!(second.line_number, 2);
    assert_eq!(second.fields[1], ("b".to_owned(), OwnedValue::I(5)));
}

#[test]
fn error_messages_read_well() {
    let got = parse_all(b"\n\ncpu,host=a usage=1.5.3 1");
    let message = got[0].as_ref().expect_err("bad number").to_string();
    assert_eq!(
        message,
        "line 3, column 18: invalid field value for field `usage`: `1.5.3` is not a valid number"
    );
    let long_token = format!("m f={}x", "1".repeat(100));
    let message = parse_all(long_token.as_bytes())[0]
        .as_ref()
        .expect_err("bad")
        .to_string();
    assert!(
        message.ends_with(&format!("`{}...` is not a valid number", "1".repeat(40))),
        "{message}"
    );
}

#[test]
fn names_borrow_the_input() {
    let input = br#"m\ 1,t=v f=1,g=2i,h=3,s="\"q\"" 7"#;
    let mut parser = Parser::new(input);
    let line = parser.next_line().expect("a line").expect("valid");
    assert_eq!(line.measurement.raw(), r"m\ 1");
    assert!(line.measurement.has_escapes());
    assert!(line.measurement == "m 1");
    assert!(!line.tags[0].0.has_escapes());
    assert_eq!(line.fields.len(), 4);
    let FieldValue::String(s) = line.fields[3].1 else {
        panic!("s is a string")
    };
    assert_eq!(s.raw(), r#"\"q\""#);
    assert!(s == r#""q""#);
    assert_eq!(line.fields[1].1.type_name(), "integer");
    assert_eq!(line.timestamp, Some(7));
    assert!(parser.next_line().is_none());
}

#[test]
fn count_lines_hint_counts_newlines() {
    assert_eq!(count_lines_hint(b""), 1);
    assert_eq!(count_lines_hint(b"a f=1\nb f=2\n"), 3);
}

/// `next_line_with`: a line whose bytes before the first space the caller
/// knows comes back as `Known` with only its fields parsed; a line that
/// only looks like it (an escaped space, two spaces, a bad field) is parsed
/// whole, errors included.
#[test]
fn known_tag_sections_skip_to_the_fields() {
    use super::{KnownLine, Parsed};
    let input = b"cpu,host=a f=1 1\n\
                  cpu,host=a g=2i,h=\"x y\" 2\n\
                  cpu,host=a\\ b f=3 3\n\
                  cpu,host=a  f=4 4\n\
                  cpu,host=a f=5x 5\n\
                  cpu,host=b f=6\n";
    let mut parser = Parser::new(input);
    let mut next = || {
        parser
            .next_line_with(|section| (section == b"cpu,host=a").then_some(7))
            .map(|p| match p {
                Ok(Parsed::Known(KnownLine {
                    line_number,
                    series,
                    fields,
                    timestamp,
                })) => {
                    let fields: Vec<_> = fields
                        .iter()
                        .map(|(k, v)| format!("{}={v:?}", k.unescaped()))
                        .collect();
                    format!("{line_number}: known {series} {fields:?} {timestamp:?}")
                }
                Ok(Parsed::Line(l)) => format!("{}: line {:?}", l.line_number, Owned::from(&l)),
                Err(e) => format!("{}: error {e}", e.line_number),
            })
    };
    assert_eq!(next().unwrap(), r#"1: known 7 ["f=F64(1.0)"] Some(1)"#);
    assert_eq!(
        next().unwrap(),
        r#"2: known 7 ["g=I64(2)", "h=String(\"x y\")"] Some(2)"#
    );
    let third = next().unwrap();
    assert!(
        third.starts_with("3: line") && third.contains(r#""a b""#),
        "{third}"
    );
    let fourth = next().unwrap();
    assert!(
        fourth.starts_with("4: line") && fourth.contains("4.0"),
        "{fourth}"
    );
    let fifth = next().unwrap();
    assert!(fifth.starts_with("5: error"), "{fifth}");
    let sixth = next().unwrap();
    assert!(
        sixth.starts_with("6: line") && sixth.contains(r#""b""#),
        "{sixth}"
    );
    assert!(next().is_none());
}
