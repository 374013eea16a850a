//! Cutting line protocol input into write batches of whole lines.
//!
//! Guarantees:
//!
//! * **Never split a line.** Batches end where the server's own line splitter
//!   ends a logical line: at a newline that is neither escaped by a backslash
//!   nor inside a double-quoted string field value (InfluxDB's `scanLine`
//!   state machine, which the ingester's `line_protocol/scan.rs` reproduces).
//!   So a batch fails or succeeds with exactly the lines the server would
//!   group together, and a string value with an embedded newline stays whole.
//! * **Line numbers translate.** The server names a refused line by its
//!   1-based *physical* line number within the request. Every batch records
//!   the physical line number (in its source) of its first byte, so
//!   `first_line + n - 1` is the line in the file. Blank and comment lines
//!   are kept in the body for that reason; a batch with nothing but them is
//!   not emitted at all (the server refuses an empty write).
//! * **Bounded, copy-free.** The input is read straight into one growing
//!   buffer; a finished batch is split off it as [`Bytes`] without copying.
//!   A batch closes after `max_lines` data lines or once it reaches
//!   `max_bytes` (a single longer line becomes a batch of its own). A line
//!   still incomplete is scanned once: the scanner's state survives reads.
//!
//! Input files are gunzipped transparently when they start with the gzip
//! magic bytes (`.gz` name or not); concatenated gzip members are read as one
//! stream, as `gzip -d` does.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use flate2::read::MultiGzDecoder;
use memchr::memchr2;

/// Bytes read from the input per `read` call.
const READ_CHUNK: usize = 256 * 1024;

/// The two bytes every gzip stream starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Where a batch came from, for progress and error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BatchInfo {
    /// The file name as given, or `stdin`.
    pub source: Arc<str>,
    /// 1-based physical line number, in `source`, of the batch's first line.
    pub first_line: u64,
    /// Physical lines in the body (a quoted or escaped newline counts).
    pub physical_lines: u64,
    /// Lines that are neither blank nor comments: the rows the batch writes.
    pub data_lines: u64,
}

impl BatchInfo {
    /// Last physical line of the batch in its source.
    pub fn last_line(&self) -> u64 {
        self.first_line + self.physical_lines.saturating_sub(1)
    }

    /// Rewrites the first `line N` of a server message (N counted within the
    /// batch) as `line M of SOURCE`, M counted within the source. A message
    /// without one, or naming a line the batch does not have, is returned
    /// unchanged.
    pub fn translate_message(&self, message: &str) -> String {
        let bytes = message.as_bytes();
        let mut from = 0;
        while let Some(off) = message[from..].find("line ") {
            let at = from + off;
            from = at + "line ".len();
            if at > 0 && bytes[at - 1].is_ascii_alphanumeric() {
                continue; // e.g. "pipeline 3"
            }
            let digits = bytes[from..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if digits == 0 {
                continue;
            }
            let Ok(n) = message[from..from + digits].parse::<u64>() else {
                continue;
            };
            if n == 0 || n > self.physical_lines {
                return message.to_owned();
            }
            return format!(
                "{}line {} of {}{}",
                &message[..at],
                self.first_line + n - 1,
                self.source,
                &message[from + digits..]
            );
        }
        message.to_owned()
    }
}

/// A batch ready to send: whole lines, ending with a newline unless the input
/// did not.
#[derive(Debug, Clone)]
pub(crate) struct Batch {
    pub info: BatchInfo,
    pub body: Bytes,
}

/// Where the incomplete line at the end of the buffer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Only blanks so far: it may still turn out to be a comment.
    Start,
    /// First non-blank byte was `#`: ends at the next newline, whatever precedes it.
    Comment,
    /// No `"` seen: only an escaped newline continues the line.
    Fast,
    /// A `"` was seen: InfluxDB's exact state machine, run from the line start.
    Exact(Exact),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Exact {
    escaped: bool,
    fields: bool,
    quoted: bool,
    equals: usize,
    commas: usize,
}

/// Cuts one input (file or stdin) into [`Batch`]es.
#[derive(Debug)]
pub(crate) struct Batcher {
    source: Arc<str>,
    max_lines: u64,
    max_bytes: usize,
    /// The current batch's complete lines (`..batch_end`), then the
    /// incomplete line being scanned.
    buf: BytesMut,
    batch_end: usize,
    batch_physical: u64,
    batch_data: u64,
    /// Physical line number of `buf[0]` in the source.
    first_line: u64,
    /// Where scanning of the incomplete line resumes, and its state.
    scan_pos: usize,
    line_newlines: u64,
    mode: Mode,
    /// No more input will come.
    eof: bool,
}

impl Batcher {
    pub fn new(source: Arc<str>, max_lines: u64, max_bytes: usize) -> Self {
        Self {
            source,
            max_lines: max_lines.max(1),
            max_bytes: max_bytes.max(1),
            buf: BytesMut::new(),
            batch_end: 0,
            batch_physical: 0,
            batch_data: 0,
            first_line: 1,
            scan_pos: 0,
            line_newlines: 0,
            mode: Mode::Start,
            eof: false,
        }
    }

    /// Appends input (tests; [`Self::read_from`] avoids the extra copy).
    #[cfg(test)]
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Reads up to [`READ_CHUNK`] bytes straight into the buffer. `Ok(0)` is
    /// the end of the input.
    pub fn read_from(&mut self, reader: &mut impl Read) -> io::Result<usize> {
        let len = self.buf.len();
        self.buf.resize(len + READ_CHUNK, 0);
        let read = reader.read(&mut self.buf[len..]);
        let n = *read.as_ref().unwrap_or(&0);
        self.buf.truncate(len + n);
        read
    }

    /// The next full batch from the data pushed so far, if one is complete.
    /// After [`Self::finish`], also the last, partly filled batch.
    pub fn next_batch(&mut self) -> Option<Batch> {
        while let Some(end) = self.scan_line() {
            self.close_line(end + 1);
            let full = self.batch_data >= self.max_lines || self.batch_end >= self.max_bytes;
            if full && let Some(batch) = self.take_batch() {
                return Some(batch);
            }
        }
        if !self.eof {
            return None;
        }
        // The scan reached the end of the input: what is left is the last
        // line, without a newline (its inner newlines are already counted).
        if self.buf.len() > self.batch_end {
            self.close_line(self.buf.len());
        }
        self.take_batch()
    }

    /// Marks the end of the input: [`Self::next_batch`] then also returns
    /// the last, partly filled batch.
    pub fn finish(&mut self) {
        self.eof = true;
    }

    /// Advances the scan of the incomplete line; returns the index of the
    /// newline ending it, if the buffer holds it.
    fn scan_line(&mut self) -> Option<usize> {
        let start = self.batch_end;
        loop {
            match self.mode {
                Mode::Start => {
                    let rest = &self.buf[self.scan_pos..];
                    let blanks = rest
                        .iter()
                        .take_while(|&&b| b == b' ' || b == b'\t')
                        .count();
                    self.scan_pos += blanks;
                    match self.buf.get(self.scan_pos) {
                        None => return None,
                        Some(b'#') => self.mode = Mode::Comment,
                        Some(_) => {
                            self.mode = Mode::Fast;
                            self.scan_pos = start;
                        }
                    }
                }
                Mode::Comment => {
                    let off = memchr::memchr(b'\n', &self.buf[self.scan_pos..]);
                    return match off {
                        Some(off) => Some(self.scan_pos + off),
                        None => {
                            self.scan_pos = self.buf.len();
                            None
                        }
                    };
                }
                Mode::Fast => {
                    let Some(off) = memchr2(b'\n', b'"', &self.buf[self.scan_pos..]) else {
                        self.scan_pos = self.buf.len();
                        return None;
                    };
                    let at = self.scan_pos + off;
                    if self.buf[at] == b'"' {
                        self.mode = Mode::Exact(Exact::default());
                        self.scan_pos = start;
                        self.line_newlines = 0;
                        continue;
                    }
                    // Without a quote, a newline continues the line only when
                    // an odd run of backslashes precedes it.
                    let backslashes = self.buf[start..at]
                        .iter()
                        .rev()
                        .take_while(|&&b| b == b'\\')
                        .count();
                    if backslashes % 2 == 0 {
                        return Some(at);
                    }
                    self.line_newlines += 1;
                    self.scan_pos = at + 1;
                }
                Mode::Exact(mut st) => {
                    let mut found = None;
                    let mut i = self.scan_pos;
                    while i < self.buf.len() {
                        let b = self.buf[i];
                        if st.escaped {
                            st.escaped = false;
                            if b == b'\n' {
                                self.line_newlines += 1;
                            }
                        } else {
                            match b {
                                b'\\' => st.escaped = true,
                                b' ' => st.fields = true,
                                b'=' if st.fields && !st.quoted => st.equals += 1,
                                b',' if st.fields && !st.quoted => st.commas += 1,
                                b'"' if st.fields && st.equals > st.commas => {
                                    st.quoted = !st.quoted
                                }
                                b'\n' if !st.quoted => {
                                    found = Some(i);
                                    break;
                                }
                                b'\n' => self.line_newlines += 1,
                                _ => {}
                            }
                        }
                        i += 1;
                    }
                    self.scan_pos = i;
                    self.mode = Mode::Exact(st);
                    return found;
                }
            }
        }
    }

    fn close_line(&mut self, end: usize) {
        let line = &self.buf[self.batch_end..end];
        let is_data = !matches!(self.mode, Mode::Comment)
            && line
                .iter()
                .any(|&b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
        self.batch_physical += 1 + self.line_newlines;
        self.batch_data += u64::from(is_data);
        self.batch_end = end;
        self.scan_pos = end;
        self.line_newlines = 0;
        self.mode = Mode::Start;
    }

    /// Splits the finished lines off the buffer; `None` (lines still counted)
    /// when none of them is data.
    fn take_batch(&mut self) -> Option<Batch> {
        if self.batch_end == 0 {
            return None;
        }
        let body = self.buf.split_to(self.batch_end).freeze();
        let info = BatchInfo {
            source: Arc::clone(&self.source),
            first_line: self.first_line,
            physical_lines: self.batch_physical,
            data_lines: self.batch_data,
        };
        self.first_line += self.batch_physical;
        self.scan_pos -= self.batch_end;
        self.batch_end = 0;
        self.batch_physical = 0;
        self.batch_data = 0;
        (info.data_lines > 0).then_some(Batch { info, body })
    }
}

/// Why an input could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InputError {
    #[error("cannot open {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("error reading {name}: {source}")]
    Read { name: Arc<str>, source: io::Error },
    #[error("{} is named .gz but is not gzip data", path.display())]
    NotGzip { path: PathBuf },
}

/// One input as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    Stdin,
    File(PathBuf),
}

impl Input {
    pub fn from_arg(path: PathBuf) -> Self {
        if path.as_os_str() == "-" {
            Self::Stdin
        } else {
            Self::File(path)
        }
    }

    pub fn name(&self) -> Arc<str> {
        match self {
            Self::Stdin => Arc::from("stdin"),
            Self::File(p) => Arc::from(p.display().to_string()),
        }
    }

    /// Opens the input, gunzipping it when it starts with the gzip magic.
    pub fn open(&self) -> Result<Box<dyn Read + Send>, InputError> {
        match self {
            Self::Stdin => {
                let reader = BufReader::with_capacity(READ_CHUNK, io::stdin());
                decompress_if_gzip(reader).map_err(|source| InputError::Read {
                    name: self.name(),
                    source,
                })
            }
            Self::File(path) => {
                let file = File::open(path).map_err(|source| InputError::Open {
                    path: path.clone(),
                    source,
                })?;
                let mut reader = BufReader::with_capacity(READ_CHUNK, file);
                let gzip =
                    starts_with_gzip_magic(&mut reader).map_err(|source| InputError::Read {
                        name: self.name(),
                        source,
                    })?;
                let empty = reader.buffer().is_empty();
                if !gzip && !empty && has_gz_extension(path) {
                    return Err(InputError::NotGzip { path: path.clone() });
                }
                Ok(if gzip {
                    Box::new(MultiGzDecoder::new(reader))
                } else {
                    Box::new(reader)
                })
            }
        }
    }

    /// The uncompressed size, when it can be known without reading the
    /// input (a plain file); for the progress bar.
    pub fn plain_size(&self) -> Option<u64> {
        let Self::File(path) = self else { return None };
        let file = File::open(path).ok()?;
        let size = file.metadata().ok()?.len();
        let mut reader = BufReader::with_capacity(16, file);
        match starts_with_gzip_magic(&mut reader) {
            Ok(false) => Some(size),
            _ => None,
        }
    }
}

fn has_gz_extension(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

/// Peeks (without consuming) whether the stream starts with the gzip magic.
pub(crate) fn starts_with_gzip_magic<R: Read>(reader: &mut BufReader<R>) -> io::Result<bool> {
    loop {
        match reader.fill_buf() {
            Ok(buf) => return Ok(buf.starts_with(&GZIP_MAGIC)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Wraps `reader` in a gzip decoder when its data starts with the magic.
pub(crate) fn decompress_if_gzip<R: Read + Send + 'static>(
    mut reader: BufReader<R>,
) -> io::Result<Box<dyn Read + Send>> {
    Ok(if starts_with_gzip_magic(&mut reader)? {
        Box::new(MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    /// Runs the batcher over `input` fed in chunks of `chunk` bytes; returns
    /// (body, first_line, physical_lines, data_lines) per batch.
    fn batches(
        input: &str,
        chunk: usize,
        max_lines: u64,
        max_bytes: usize,
    ) -> Vec<(String, u64, u64, u64)> {
        let mut b = Batcher::new(Arc::from("in.lp"), max_lines, max_bytes);
        let mut out = Vec::new();
        let mut push = |batch: Batch| {
            out.push((
                String::from_utf8(batch.body.to_vec()).expect("utf8 test input"),
                batch.info.first_line,
                batch.info.physical_lines,
                batch.info.data_lines,
            ))
        };
        for piece in input.as_bytes().chunks(chunk.max(1)) {
            b.push(piece);
            while let Some(batch) = b.next_batch() {
                push(batch);
            }
        }
        b.finish();
        while let Some(batch) = b.next_batch() {
            push(batch);
        }
        out
    }

    #[test]
    fn batches_by_line_count_and_keeps_every_byte() {
        let input = "a f=1 1\nb f=2 2\nc f=3 3\nd f=4 4\ne f=5 5";
        for chunk in [1, 3, 7, 1000] {
            let got = batches(input, chunk, 2, 1 << 20);
            assert_eq!(
                got,
                [
                    ("a f=1 1\nb f=2 2\n".to_owned(), 1, 2, 2),
                    ("c f=3 3\nd f=4 4\n".to_owned(), 3, 2, 2),
                    ("e f=5 5".to_owned(), 5, 1, 1),
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn blank_and_comment_lines_count_for_numbers_but_not_rows() {
        let input = "# header\n\na f=1\n  # note \"open\nb f=2\n\n";
        let got = batches(input, 4, 1, 1 << 20);
        assert_eq!(
            got,
            [
                ("# header\n\na f=1\n".to_owned(), 1, 3, 1),
                ("  # note \"open\nb f=2\n".to_owned(), 4, 2, 1),
                // The trailing blank line alone is not sent.
            ]
        );
        // Only comments: nothing to send at all.
        assert!(batches("# a\n# b\n", 2, 10, 1 << 20).is_empty());
    }

    #[test]
    fn never_splits_quoted_or_escaped_newlines() {
        let input = "m f=\"x\ny\" 1\nn,t=a\\\nb f=2 2\no f=3 3\n";
        for chunk in [1, 2, 5, 100] {
            let got = batches(input, chunk, 1, 1 << 20);
            assert_eq!(
                got,
                [
                    ("m f=\"x\ny\" 1\n".to_owned(), 1, 2, 1),
                    ("n,t=a\\\nb f=2 2\n".to_owned(), 3, 2, 1),
                    ("o f=3 3\n".to_owned(), 5, 1, 1),
                ],
                "chunk {chunk}"
            );
        }
        // An escaped backslash does not escape the newline.
        let got = batches("a\\\\\nb f=1\n", 1, 1, 1 << 20);
        assert_eq!(got[0].0, "a\\\\\n");
        // A quote in the tag set is an ordinary byte; an escaped quote does
        // not open a string; InfluxDB's comma quirk (`a,b="…`) is kept.
        assert_eq!(batches("m,t=\"a f=1\nn f=2\n", 3, 1, 1 << 20).len(), 2);
        assert_eq!(batches("m f=\\\"\nv\"\nn f=1\n", 3, 1, 1 << 20).len(), 3);
        assert_eq!(batches("m a,b=\"x\ny\"\n", 1, 1, 1 << 20).len(), 2);
    }

    #[test]
    fn batches_by_bytes_without_splitting_long_lines() {
        let long = format!("m f=\"{}\"", "x".repeat(100));
        let input = format!("a f=1\n{long}\nb f=2\nc f=3\n");
        let got = batches(&input, 16, 1000, 20);
        assert_eq!(
            got,
            [
                (format!("a f=1\n{long}\n"), 1, 2, 2),
                ("b f=2\nc f=3\n".to_owned(), 3, 2, 2),
            ]
        );
    }

    #[test]
    fn translates_server_line_numbers_to_the_source() {
        let info = BatchInfo {
            source: Arc::from("data.lp"),
            first_line: 5001,
            physical_lines: 100,
            data_lines: 100,
        };
        assert_eq!(
            info.translate_message("line 3, column 7: missing field key"),
            "line 5003 of data.lp, column 7: missing field key"
        );
        assert_eq!(
            info.translate_message("line 1: table `cpu`, column `x` appears twice in the line"),
            "line 5001 of data.lp: table `cpu`, column `x` appears twice in the line"
        );
        // A line the batch does not have, or no line at all: unchanged.
        assert_eq!(info.translate_message("line 101: x"), "line 101: x");
        assert_eq!(
            info.translate_message("buffer memory is full"),
            "buffer memory is full"
        );
        assert_eq!(
            info.translate_message("pipeline 3, line x, line 2: y"),
            "pipeline 3, line x, line 5002 of data.lp: y"
        );
        assert_eq!(info.last_line(), 5100);
    }

    #[test]
    fn gunzips_by_magic_and_refuses_fake_gz() {
        let dir = tempfile::tempdir().expect("temp dir");
        let lp = "a f=1 1\nb f=2 2\n";

        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(lp.as_bytes()).expect("gzip to memory");
        let gz = gz.finish().expect("gzip to memory");
        // Two concatenated members decode as one stream.
        let mut two = gz.clone();
        two.extend_from_slice(&gz);

        let read_all = |path: &Path| -> Result<String, InputError> {
            let mut s = String::new();
            Input::File(path.to_owned())
                .open()?
                .read_to_string(&mut s)
                .map_err(|source| InputError::Read {
                    name: "t".into(),
                    source,
                })?;
            Ok(s)
        };

        let plain = dir.path().join("plain.lp");
        std::fs::write(&plain, lp).expect("write");
        assert_eq!(read_all(&plain).expect("plain"), lp);
        assert_eq!(Input::File(plain).plain_size(), Some(lp.len() as u64));

        let hidden = dir.path().join("no-extension");
        std::fs::write(&hidden, &two).expect("write");
        assert_eq!(
            read_all(&hidden).expect("gzip by magic"),
            format!("{lp}{lp}")
        );
        assert_eq!(Input::File(hidden).plain_size(), None);

        let fake = dir.path().join("fake.lp.gz");
        std::fs::write(&fake, lp).expect("write");
        assert!(matches!(read_all(&fake), Err(InputError::NotGzip { .. })));

        let missing = dir.path().join("missing.lp");
        let err = read_all(&missing).expect_err("missing file");
        assert!(err.to_string().starts_with("cannot open "), "{err}");

        let truncated = dir.path().join("cut.gz");
        std::fs::write(&truncated, &gz[..gz.len() / 2]).expect("write");
        assert!(matches!(read_all(&truncated), Err(InputError::Read { .. })));
    }

    #[test]
    fn reads_from_a_reader_in_chunks() {
        let input: String = (0..10_000).map(|i| format!("m,t=a f={i} {i}\n")).collect();
        let mut reader = io::Cursor::new(input.clone().into_bytes());
        let mut b = Batcher::new(Arc::from("x"), 3000, 1 << 30);
        let mut got = Vec::new();
        loop {
            while let Some(batch) = b.next_batch() {
                got.push(batch);
            }
            if b.read_from(&mut reader).expect("cursor read") == 0 {
                break;
            }
        }
        b.finish();
        got.extend(std::iter::from_fn(|| b.next_batch()));
        let lines: Vec<u64> = got.iter().map(|b| b.info.data_lines).collect();
        assert_eq!(lines, [3000, 3000, 3000, 1000]);
        let firsts: Vec<u64> = got.iter().map(|b| b.info.first_line).collect();
        assert_eq!(firsts, [1, 3001, 6001, 9001]);
        let joined: Vec<u8> = got.iter().flat_map(|b| b.body.iter().copied()).collect();
        assert_eq!(joined, input.as_bytes());
    }
}
