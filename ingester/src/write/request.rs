//! A write as received, and the WAL record format of older releases.
//!
//! Releases before the columnar WAL record (`wal_record.rs`, version 2)
//! stored the request itself in the WAL (line protocol bytes or Arrow IPC,
//! plus the server time used for lines without a timestamp), and replay
//! re-validated it. Replay still decodes that version 1 format, so a WAL
//! left by an older release is applied, not lost; nothing writes it any more
//! (only tests, to check that).

use bytes::{Buf, Bytes};
#[cfg(test)]
use bytes::{BufMut, BytesMut};

/// Timestamp precision of line protocol timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
}

impl Precision {
    /// Nanoseconds per unit.
    pub fn multiplier(self) -> i64 {
        match self {
            Self::Nanoseconds => 1,
            Self::Microseconds => 1_000,
            Self::Milliseconds => 1_000_000,
            Self::Seconds => 1_000_000_000,
        }
    }

    /// Parses InfluxDB's spelling (`ns`, `us`, `µs`, `ms`, `s`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "" | "ns" | "n" => Self::Nanoseconds,
            "us" | "u" | "µs" => Self::Microseconds,
            "ms" => Self::Milliseconds,
            "s" => Self::Seconds,
            _ => return None,
        })
    }

    #[cfg(test)]
    fn code(self) -> u8 {
        match self {
            Self::Nanoseconds => 0,
            Self::Microseconds => 1,
            Self::Milliseconds => 2,
            Self::Seconds => 3,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => Self::Nanoseconds,
            1 => Self::Microseconds,
            2 => Self::Milliseconds,
            3 => Self::Seconds,
            _ => return None,
        })
    }
}

/// What a write carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    LineProtocol {
        body: Bytes,
        precision: Precision,
        /// Server time (ns) given to lines without a timestamp. Recorded so
        /// replay gives them the same time.
        default_time: i64,
    },
    Arrow {
        table: String,
        ipc: Bytes,
        tags: Vec<String>,
    },
}

/// One write request: a namespace and its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteRequest {
    pub namespace: String,
    pub payload: Payload,
}

impl WriteRequest {
    /// Size of the payload in bytes (what the request size limit applies to).
    pub fn payload_len(&self) -> usize {
        match &self.payload {
            Payload::LineProtocol { body, .. } => body.len(),
            Payload::Arrow { ipc, .. } => ipc.len(),
        }
    }
}

const FORMAT_VERSION: u8 = 1;
const KIND_LP: u8 = 1;
const KIND_ARROW: u8 = 2;

/// A WAL payload that cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[error("undecodable WAL operation: {0}")]
pub struct DecodeError(&'static str);

impl WriteRequest {
    /// Encodes the request as a version 1 WAL record.
    #[cfg(test)]
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.payload_len() + self.namespace.len() + 64);
        b.put_u8(FORMAT_VERSION);
        put_str(&mut b, &self.namespace);
        match &self.payload {
            Payload::LineProtocol {
                body,
                precision,
                default_time,
            } => {
                b.put_u8(KIND_LP);
                b.put_u8(precision.code());
                b.put_i64_le(*default_time);
                b.put_u32_le(body.len() as u32);
                b.put_slice(body);
            }
            Payload::Arrow { table, ipc, tags } => {
                b.put_u8(KIND_ARROW);
                put_str(&mut b, table);
                b.put_u32_le(tags.len() as u32);
                for t in tags {
                    put_str(&mut b, t);
                }
                b.put_u32_le(ipc.len() as u32);
                b.put_slice(ipc);
            }
        }
        b.freeze()
    }

    /// Decodes a WAL payload. Zero-copy: the body is a slice of `data`.
    pub fn decode(mut data: Bytes) -> Result<Self, DecodeError> {
        if get_u8(&mut data)? != FORMAT_VERSION {
            return Err(DecodeError("unknown format version"));
        }
        let namespace = get_str(&mut data)?;
        let payload = match get_u8(&mut data)? {
            KIND_LP => {
                let precision =
                    Precision::from_code(get_u8(&mut data)?).ok_or(DecodeError("bad precision"))?;
                if data.remaining() < 8 {
                    return Err(DecodeError("truncated"));
                }
                let default_time = data.get_i64_le();
                let body = get_bytes(&mut data)?;
                Payload::LineProtocol {
                    body,
                    precision,
                    default_time,
                }
            }
            KIND_ARROW => {
                let table = get_str(&mut data)?;
                let n = get_u32(&mut data)? as usize;
                if n > data.remaining() {
                    return Err(DecodeError("bad tag count"));
                }
                let mut tags = Vec::with_capacity(n);
                for _ in 0..n {
                    tags.push(get_str(&mut data)?);
                }
                let ipc = get_bytes(&mut data)?;
                Payload::Arrow { table, ipc, tags }
            }
            _ => return Err(DecodeError("unknown payload kind")),
        };
        Ok(Self { namespace, payload })
    }
}

#[cfg(test)]
fn put_str(b: &mut BytesMut, s: &str) {
    b.put_u32_le(s.len() as u32);
    b.put_slice(s.as_bytes());
}

fn get_u8(b: &mut Bytes) -> Result<u8, DecodeError> {
    if b.remaining() < 1 {
        return Err(DecodeError("truncated"));
    }
    Ok(b.get_u8())
}

fn get_u32(b: &mut Bytes) -> Result<u32, DecodeError> {
    if b.remaining() < 4 {
        return Err(DecodeError("truncated"));
    }
    Ok(b.get_u32_le())
}

fn get_bytes(b: &mut Bytes) -> Result<Bytes, DecodeError> {
    let n = get_u32(b)? as usize;
    if b.remaining() < n {
        return Err(DecodeError("truncated"));
    }
    Ok(b.split_to(n))
}

fn get_str(b: &mut Bytes) -> Result<String, DecodeError> {
    let raw = get_bytes(b)?;
    String::from_utf8(raw.to_vec()).map_err(|_| DecodeError("non-UTF-8 name"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn roundtrip_both_kinds() {
        let lp = WriteRequest {
            namespace: "ns".into(),
            payload: Payload::LineProtocol {
                body: Bytes::from_static(b"cpu,host=a v=1 1\n"),
                precision: Precision::Milliseconds,
                default_time: -42,
            },
        };
        assert_eq!(WriteRequest::decode(lp.encode()).unwrap(), lp);
        let arrow = WriteRequest {
            namespace: "other".into(),
            payload: Payload::Arrow {
                table: "t".into(),
                ipc: Bytes::from_static(&[1, 2, 3]),
                tags: vec!["a".into(), "b".into()],
            },
        };
        assert_eq!(WriteRequest::decode(arrow.encode()).unwrap(), arrow);
    }

    proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = WriteRequest::decode(Bytes::from(data));
        }

        #[test]
        fn truncated_encodings_are_errors(cut in 0usize..40) {
            let lp = WriteRequest {
                namespace: "namespace".into(),
                payload: Payload::LineProtocol {
                    body: Bytes::from_static(b"cpu v=1 1\n"),
                    precision: Precision::Seconds,
                    default_time: 7,
                },
            };
            let enc = lp.encode();
            prop_assume!(cut < enc.len());
            prop_assert!(WriteRequest::decode(enc.slice(..cut)).is_err());
        }
    }
}
