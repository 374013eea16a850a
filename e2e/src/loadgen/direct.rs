//! `WriteService.Write` with line protocol, its payload handed to the
//! connection as it is.
//!
//! tonic's generated client encodes a message into one buffer that grows as
//! it goes: for a 5,000-line batch (2.4 MB) that is a copy of the payload
//! plus the copies of each reallocation, about a quarter of the load
//! generator's CPU at target 1's rate. The load generator shares the two
//! cores with the server it measures, so that CPU is taken from the server.
//! Here the request body is two chunks: the gRPC frame header followed by
//! the message's other fields and the payload field's key and length, then
//! the payload itself. Protobuf fields may come in any order, so the bytes
//! on the wire are a valid encoding of the same `WriteRequest` (a test
//! decodes them); a router could send the same way. `--tonic-encode` keeps
//! the generated client, for comparison.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HeaderValue, TE};
use http_body::{Body, Frame, SizeHint};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use sluice_proto::v1;
use tonic::client::GrpcService;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// The method's path.
const PATH: &str = "/sluice.ingester.v1.WriteService/Write";

/// `WriteRequest.line_protocol`'s field number.
const LINE_PROTOCOL_FIELD: u32 = 2;

/// The first chunk of a request carrying `payload_len` bytes of line
/// protocol: the gRPC frame header (uncompressed, the message's length),
/// `namespace`, `precision`, and the key and length of `line_protocol`.
pub fn head(
    namespace: &str,
    precision: v1::Precision,
    payload_len: usize,
) -> Result<Bytes, Status> {
    let rest = v1::WriteRequest {
        namespace: namespace.to_string(),
        payload: None,
        precision: precision as i32,
    };
    let mut buf = BytesMut::with_capacity(5 + rest.encoded_len() + 16);
    buf.put_u8(0);
    buf.put_u32(0);
    rest.encode(&mut buf)
        .map_err(|e| Status::internal(format!("encoding the request: {e}")))?;
    encode_key(LINE_PROTOCOL_FIELD, WireType::LengthDelimited, &mut buf);
    encode_varint(payload_len as u64, &mut buf);
    let len = u32::try_from(buf.len() - 5 + payload_len)
        .map_err(|_| Status::invalid_argument("a gRPC message is at most 4 GiB"))?;
    buf[1..5].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// Sends one write and waits for its status.
pub async fn write(
    channel: &mut Channel,
    authorization: Option<&HeaderValue>,
    head: Bytes,
    payload: Bytes,
) -> Result<(), Status> {
    let mut req = http::Request::builder()
        .method(http::Method::POST)
        .uri(PATH)
        .header(CONTENT_TYPE, "application/grpc")
        .header(TE, "trailers");
    if let Some(v) = authorization {
        req = req.header(http::header::AUTHORIZATION, v);
    }
    let req = req
        .body(tonic::body::Body::new(Chunks {
            head: Some(head),
            payload: Some(payload),
        }))
        .map_err(|e| Status::internal(format!("building the request: {e}")))?;
    std::future::poll_fn(|cx| GrpcService::poll_ready(channel, cx))
        .await
        .map_err(|e| Status::from_error(e.into()))?;
    let resp = GrpcService::call(channel, req)
        .await
        .map_err(|e| Status::from_error(e.into()))?;
    let (parts, mut body) = resp.into_parts();
    if parts.status != http::StatusCode::OK {
        return Err(Status::unknown(format!(
            "HTTP status {} instead of a gRPC response",
            parts.status
        )));
    }
    // A trailers-only response (every error Sluice returns) carries the
    // status in its headers.
    if let Some(status) = Status::from_header_map(&parts.headers) {
        return outcome(status);
    }
    let mut trailers = None;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(t) = frame?.into_trailers() {
            trailers = Some(t);
        }
    }
    match trailers.as_ref().and_then(Status::from_header_map) {
        Some(status) => outcome(status),
        None => Err(Status::internal("the response ended without a grpc-status")),
    }
}

fn outcome(status: Status) -> Result<(), Status> {
    match status.code() {
        Code::Ok => Ok(()),
        _ => Err(status),
    }
}

/// The request body: the head, then the payload, each one frame.
struct Chunks {
    head: Option<Bytes>,
    payload: Option<Bytes>,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let next = this.head.take().or_else(|| this.payload.take());
        Poll::Ready(next.map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.payload.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let len = |b: &Option<Bytes>| b.as_ref().map_or(0, |b| b.len() as u64);
        SizeHint::with_exact(len(&self.head) + len(&self.payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two chunks are one gRPC frame holding the `WriteRequest` the
    /// generated client would send.
    #[test]
    fn head_and_payload_decode_as_the_request() {
        for payload in [
            Bytes::new(),
            Bytes::from_static(b"cpu,host=a usage=1 1\n"),
            Bytes::from(vec![b'x'; 300_000]),
        ] {
            let head = head("ns-1", v1::Precision::Milliseconds, payload.len()).unwrap();
            let mut wire = head.to_vec();
            wire.extend_from_slice(&payload);
            assert_eq!(wire[0], 0, "not compressed");
            let len = u32::from_be_bytes(wire[1..5].try_into().unwrap()) as usize;
            assert_eq!(len, wire.len() - 5);
            let got = v1::WriteRequest::decode(&wire[5..]).unwrap();
            assert_eq!(
                got,
                v1::WriteRequest {
                    namespace: "ns-1".into(),
                    payload: Some(v1::write_request::Payload::LineProtocol(payload.clone())),
                    precision: v1::Precision::Milliseconds as i32,
                }
            );
        }
    }
}
