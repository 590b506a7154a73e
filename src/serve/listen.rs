//! Connections: accepted up to a cap, each served by hyper with a deadline for its request heads (which also
//! closes a keep-alive connection that stays idle), and all of them closed by a deadline once shutdown is
//! asked. `axum::serve` has none of these knobs, and a client that opens connections and sends half a head
//! would otherwise hold them, and a SIGTERM, forever.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

use super::Metrics;

/// How connections are held to account.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// Time a client has to send a complete request head, counted from when the server starts waiting for
    /// it: for a new connection, and again between requests on a kept-alive one (so it is also the idle
    /// timeout). The same time bounds reading a request's body and a write blocked by a client that does not
    /// read its responses.
    pub head_timeout: Duration,
    /// Time connections are given to finish once shutdown is asked; [`serve_connections`] then returns, and
    /// the caller closes what is left by shutting its runtime down (`serve::run` and `serve::spawn` do).
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            head_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Connections over the cap answered 503 at once; more are closed without an answer.
const MAX_REFUSING: usize = 64;

/// Largest request head accepted (hyper's default buffer is 400 kB; a query string is at most 8 kB here, and a
/// request target past hyper's own 64 kB limit is answered 414 before this one applies).
const MAX_HEAD_BYTES: usize = 128 * 1024;

/// Serves `app` on `listener` until `stop` completes, then lets the connections finish for at most the
/// grace period. Returns how many were still open when the grace period ended.
pub async fn serve_connections(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    stop: impl std::future::Future<Output = ()>,
) -> usize {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSING));
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let mut stop = pin!(stop);
    loop {
        let (stream, _peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, mostly: wait for some to be given back instead of spinning.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.refused_connections.add(1);
            // The refusals themselves are bounded: past that, a flood's connections are just closed.
            if let Ok(refusing) = refusals.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream, limits.max_connections).await;
                    drop(refusing);
                });
            }
            continue;
        };
        metrics.open_connections.increment(1.0);
        // Requests of this connection between their head and their response: at shutdown a connection with
        // none (idle, or still sending a head) is closed at once, the others are let finish. A request counts
        // until the last byte of its response's body is handed to hyper.
        let in_flight = Arc::new(AtomicUsize::new(0));
        let counted = in_flight.clone();
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let request = InFlight::enter(&counted);
            let answer = app.clone().oneshot(req.map(Body::new));
            async move {
                let response = answer.await?;
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| CountedBody { body, request }),
                )
            }
        });
        let io = WriteDeadline::new(JsonErrorIo::new(stream), limits.head_timeout);
        let conn = builder.serve_connection(TokioIo::new(io), service);
        let mut closing = closing_rx.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut conn = pin!(conn);
            let mut asked = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!("connection ended: {e}");
                        }
                        break;
                    }
                    _ = closing.wait_for(|c| *c), if !asked => {
                        if in_flight.load(Relaxed) == 0 {
                            break;
                        }
                        asked = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            metrics.open_connections.decrement(1.0);
            drop(slot);
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let all = limits.max_connections.max(1) as u32;
    let finished = tokio::time::timeout(limits.shutdown_grace, slots.acquire_many(all)).await;
    match finished {
        Ok(_) => 0,
        Err(_) => all as usize - slots.available_permits(),
    }
}

/// One request counted as under way on its connection for as long as this lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Relaxed);
        Self(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// A response body that keeps its request counted as under way until it has been sent whole.
struct CountedBody {
    body: Body,
    #[allow(dead_code)] // held for its Drop
    request: InFlight,
}

impl hyper::body::Body for CountedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The answer to a connection over the cap: a JSON 503, then the connection is closed.
async fn refuse(mut stream: tokio::net::TcpStream, cap: usize) {
    let body = error_body(
        503,
        &format!("the server holds its limit of {cap} open connections; try again shortly"),
    );
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), write).await;
}

fn error_body(status: u16, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"error": message, "status": status})).unwrap_or_default()
}

/// What hyper answers by itself, before any handler runs, to a request it cannot parse.
fn hyper_error_message(status: u16) -> Option<String> {
    Some(match status {
        400 => "the request is not valid HTTP/1.1 (a malformed request line or header)".to_string(),
        414 => "the request target is too long".to_string(),
        431 => {
            format!(
                "the request's headers are too large or too many (at most {MAX_HEAD_BYTES} bytes and 100 \
                 headers)"
            )
        }
        _ => return None,
    })
}

/// A socket whose writes are watched for the one kind of response the application never makes: hyper's own
/// answer to a request it could not parse (400, 414, 431), which has an empty body and no content type. That
/// response is rewritten into the API's JSON error shape; every other byte passes through untouched. Such a
/// head always arrives whole in one write (one buffer, or one filled slice of a vectored write).
struct JsonErrorIo<T> {
    inner: T,
    /// A rewritten response not yet fully written.
    pending: Vec<u8>,
    sent: usize,
}

impl<T> JsonErrorIo<T> {
    fn new(inner: T) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            sent: 0,
        }
    }
}

/// The rewritten form of `buf` when it is an empty-bodied error head from hyper.
fn rewrite_bare_error(buf: &[u8]) -> Option<Vec<u8>> {
    if !(buf.starts_with(b"HTTP/1.1 4") || buf.starts_with(b"HTTP/1.0 4")) {
        return None;
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.get(9..12)?.parse().ok()?;
    let headers: Vec<&str> = lines.collect();
    let named = |h: &str, name: &str| {
        h.split_once(':')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case(name))
    };
    if headers.iter().any(|h| named(h, "content-type")) {
        return None;
    }
    let empty = headers.iter().any(|h| {
        named(h, "content-length") && h.split_once(':').is_some_and(|(_, v)| v.trim() == "0")
    });
    if !empty || end + 4 != buf.len() {
        return None;
    }
    let body = error_body(status, &hyper_error_message(status)?);
    let mut out = Vec::with_capacity(end + body.len() + 96);
    out.extend_from_slice(status_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers.iter().filter(|h| !named(h, "content-length")) {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(
        format!(
            "content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&body);
    Some(out)
}

impl<T: AsyncWrite + Unpin> JsonErrorIo<T> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = std::task::ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonErrorIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonErrorIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_pending(cx))?;
        if let Some(rewritten) = rewrite_bare_error(buf) {
            self.pending = rewritten;
            self.sent = 0;
            // The rewritten bytes stand for all of hyper's: it must not write them again.
            let _ = self.poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_pending(cx))?;
        // A bare error is a head alone: one slice with bytes in it.
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next()) {
            if let Some(rewritten) = rewrite_bare_error(only) {
                self.pending = rewritten;
                self.sent = 0;
                let _ = self.poll_pending(cx)?;
                return Poll::Ready(Ok(only.len()));
            }
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A socket whose writes must make progress: a client that stops reading its responses (its receive window
/// full) would otherwise hold the connection, and a slot under `--max-connections`, for ever. A write that
/// stays blocked for the deadline fails the connection.
struct WriteDeadline<T> {
    inner: T,
    deadline: Duration,
    blocked: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteDeadline<T> {
    fn new(inner: T, deadline: Duration) -> Self {
        Self {
            inner,
            deadline,
            blocked: None,
        }
    }

    /// Passes a write's outcome through, timing how long it has been blocked.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        outcome: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if outcome.is_ready() {
            self.blocked = None;
            return outcome;
        }
        let deadline = self.deadline;
        let blocked = self
            .blocked
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(deadline)));
        match blocked.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading its responses",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, outcome)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, outcome)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, outcome)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_blocked_past_its_deadline_fails_the_connection() {
        use tokio::io::AsyncWriteExt;
        // The peer never reads: 64 bytes of buffer fill, and the rest of the write blocks.
        let (ours, _peer) = tokio::io::duplex(64);
        let mut io = WriteDeadline::new(ours, Duration::from_millis(200));
        let t = std::time::Instant::now();
        let err = io.write_all(&[0u8; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        // A peer that reads keeps the connection alive however long the whole write takes.
        let (ours, mut peer) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut sink = Vec::new();
            let mut buf = [0u8; 16];
            while let Ok(n) = peer.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.extend_from_slice(&buf[..n]);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            sink.len()
        });
        let mut io = WriteDeadline::new(ours, Duration::from_millis(200));
        io.write_all(&[1u8; 4096]).await.unwrap();
        io.shutdown().await.unwrap();
        drop(io);
        assert_eq!(reader.await.unwrap(), 4096);
    }

    #[test]
    fn hypers_bare_errors_get_a_json_body_and_nothing_else_changes() {
        let bare =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(rewrite_bare_error(bare).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "));
        assert!(head.contains("content-type: application/json"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["status"], 431);
        assert!(v["error"]
            .as_str()
            .unwrap()
            .contains("headers are too large"));
        // The application's own errors already carry a type; success is never touched.
        let ours = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n";
        assert!(rewrite_bare_error(ours).is_none());
        assert!(rewrite_bare_error(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
    }
}
