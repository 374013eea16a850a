//! A minimal keep-alive HTTP/1.1 client for `POST /api/v2/write`: one
//! connection per writer, one request in flight on it, reconnect after an
//! error or a `Connection: close`. `http://`, or `https://` verified against
//! `--ca-cert` (see [`super::auth`]). It exists so the load generator can
//! drive any InfluxDB v2-compatible server without pulling in a full HTTP
//! client stack.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::auth::{ClientAuth, Io};

/// Largest response head or body we accept (error bodies are small JSON).
const MAX_RESPONSE: usize = 1 << 20;

/// One writer's connection to an InfluxDB v2 write endpoint.
pub struct HttpWriter {
    host: String,
    /// `https://`.
    tls: bool,
    /// `/api/v2/write?bucket=…&org=…&precision=ns`
    path: String,
    auth: ClientAuth,
    conn: Option<BufReader<Box<dyn Io>>>,
}

impl std::fmt::Debug for HttpWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpWriter")
            .field("host", &self.host)
            .field("tls", &self.tls)
            .field("path", &self.path)
            .field("auth", &self.auth)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

/// A response: status code and (short) body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

impl HttpWriter {
    /// `addr` is `http://host:port[/prefix]` or `https://…`.
    pub fn new(addr: &str, bucket: &str, org: &str, auth: ClientAuth) -> anyhow::Result<Self> {
        let (tls, rest) = match (addr.strip_prefix("http://"), addr.strip_prefix("https://")) {
            (Some(rest), _) => (false, rest),
            (None, Some(rest)) => (true, rest),
            (None, None) => bail!("--addr for --target http must start with http:// or https://"),
        };
        let (host, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let path = format!(
            "{prefix}/api/v2/write?bucket={}&org={}&precision=ns",
            encode(bucket),
            encode(org)
        );
        Ok(Self {
            host: host.to_string(),
            tls,
            path,
            auth,
            conn: None,
        })
    }

    /// Sends `body`; on any I/O error the connection is dropped (the next
    /// call reconnects) and the error returned.
    pub async fn write(&mut self, body: &Bytes) -> anyhow::Result<HttpResponse> {
        let r = self.try_write(body).await;
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    async fn try_write(&mut self, body: &Bytes) -> anyhow::Result<HttpResponse> {
        if self.conn.is_none() {
            let s = tokio::time::timeout(
                Duration::from_secs(10),
                self.auth.connect_http(&self.host, self.tls),
            )
            .await
            .context("connect timed out")??;
            self.conn = Some(BufReader::with_capacity(16 << 10, s));
        }
        let conn = self.conn.as_mut().expect("connected above");
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
            self.path,
            self.host,
            body.len()
        );
        if let Some(t) = self.auth.token() {
            head.push_str(&format!("Authorization: Token {t}\r\n"));
        }
        head.push_str("\r\n");
        let s = conn.get_mut();
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        s.flush().await?;

        // Status line and headers.
        let mut line = String::new();
        conn.read_line(&mut line).await?;
        if line.is_empty() {
            bail!("connection closed before a response");
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut content_length = None;
        let mut chunked = false;
        let mut close = line.starts_with("HTTP/1.0");
        let mut head_len = line.len();
        loop {
            line.clear();
            let n = conn.read_line(&mut line).await?;
            head_len += n;
            if n == 0 || head_len > MAX_RESPONSE {
                bail!("truncated or oversized response head");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                content_length = Some(v.parse::<usize>().context("content-length")?);
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                chunked = v.eq_ignore_ascii_case("chunked");
            } else if k.eq_ignore_ascii_case("connection") {
                close = v.eq_ignore_ascii_case("close");
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                conn.read_line(&mut line).await?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .context("chunk size")?;
                if body.len() + size > MAX_RESPONSE {
                    bail!("oversized response body");
                }
                let at = body.len();
                body.resize(at + size, 0);
                conn.read_exact(&mut body[at..]).await?;
                line.clear();
                conn.read_line(&mut line).await?; // CRLF after the chunk
                if size == 0 {
                    break;
                }
            }
        } else if let Some(n) = content_length {
            if n > MAX_RESPONSE {
                bail!("oversized response body");
            }
            body.resize(n, 0);
            conn.read_exact(&mut body).await?;
        } else if status != 204 && status != 304 && !(100..200).contains(&status) {
            // Body delimited by the end of the connection.
            conn.take(MAX_RESPONSE as u64)
                .read_to_end(&mut body)
                .await?;
            close = true;
        }
        if close {
            self.conn = None;
        }
        Ok(HttpResponse {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// Percent-encodes a query parameter value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server answering each request with the given raw responses in turn,
    /// on one connection.
    async fn serve(responses: Vec<&'static str>) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            let (s, _) = l.accept().await.expect("accept");
            let mut s = BufReader::new(s);
            for resp in responses {
                // Read one request: head then Content-Length bytes.
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    s.read_line(&mut line).await.expect("read");
                    if line.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().expect("length");
                    }
                }
                let mut body = vec![0; len];
                s.read_exact(&mut body).await.expect("body");
                s.get_mut().write_all(resp.as_bytes()).await.expect("write");
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn keeps_the_connection_and_reads_every_body_framing() {
        let addr = serve(vec![
            "HTTP/1.1 204 No Content\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\nContent-Length: 13\r\n\r\n{\"code\":\"x\"}\n",
            "HTTP/1.1 429 Too Many\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        ])
        .await;
        let auth = ClientAuth::new(Some("t"), None).expect("auth");
        let mut w = HttpWriter::new(&addr, "b k", "o", auth).expect("addr");
        assert!(w.path.contains("bucket=b%20k"));
        let body = Bytes::from_static(b"cpu v=1 1\n");
        let r = w.write(&body).await.expect("first");
        assert_eq!((r.status, r.body.as_str()), (204, ""));
        let r = w.write(&body).await.expect("second");
        assert_eq!((r.status, r.body.as_str()), (400, "{\"code\":\"x\"}\n"));
        let r = w.write(&body).await.expect("third");
        assert_eq!((r.status, r.body.as_str()), (429, "abcde"));
    }

    #[test]
    fn refuses_other_schemes() {
        assert!(HttpWriter::new("ftp://x", "b", "o", ClientAuth::default()).is_err());
        assert!(HttpWriter::new("x:8080", "b", "o", ClientAuth::default()).is_err());
    }
}
