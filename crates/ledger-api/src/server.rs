//! The HTTP server loop, with the limits a listener facing untrusted clients needs and
//! `axum::serve` does not set: at most [`HttpLimits::max_connections`] connections —
//! at the limit, a new connection takes the slot of the oldest one that has not sent a
//! byte yet (a flood of silent connections cannot lock others out), else it is closed
//! at once and counted — request headers read within a deadline and bounded
//! in size (a client that sends one byte a second is dropped, not waited for), request
//! bodies that must keep arriving (a stalled body ends the request), and a graceful
//! stop that waits a bounded time for requests in flight.
//!
//! Written on hyper's connection builder (the same one axum's `serve` uses) because
//! its `header_read_timeout` needs a timer that `axum::serve` does not give it.

use crate::ApiState;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// What the server allows a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (each request of a connection).
    pub header_read_timeout: Duration,
    /// Longest pause while a request body arrives.
    pub body_idle_timeout: Duration,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// How long a stop waits for requests in flight.
    pub shutdown_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Counts of what the limits turned away, for `/metrics`.
#[derive(Debug, Default)]
pub struct HttpCounters {
    pub connections_open: AtomicU64,
    pub connections_refused: AtomicU64,
    pub bodies_stalled: AtomicU64,
}

/// Serves the API on a bound listener until `shutdown` resolves.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: ApiState,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, ?limits, "HTTP API listening");
    let counters = state.counters.clone();
    let stalls = counters.clone();
    let app = crate::router(state).layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            idle_bodies(limits.body_idle_timeout, stalls.clone(), req, next)
        },
    ));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let silent = Arc::new(Silent::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    let mut next_id = 0u64;
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment, go on.
                    tracing::warn!("accepting an HTTP connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            // Full: the oldest connection that never spoke gives way, if there is one.
            Err(_) if silent.evict_oldest() => {
                match tokio::time::timeout(
                    Duration::from_millis(100),
                    slots.clone().acquire_owned(),
                )
                .await
                {
                    Ok(Ok(slot)) => slot,
                    _ => {
                        counters.connections_refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
            }
            Err(_) => {
                counters.connections_refused.fetch_add(1, Ordering::Relaxed);
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let id = next_id;
        let spoke = Arc::new(AtomicBool::new(false));
        let io = Spoken {
            inner: stream,
            spoke: spoke.clone(),
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192))
            .serve_connection(hyper_util::rt::TokioIo::new(io), service);
        let connection = graceful.watch(connection);
        counters.connections_open.fetch_add(1, Ordering::Relaxed);
        // The slot, the count and the registry entry go with the task however it ends,
        // served to the end or evicted (aborted): the guard is dropped either way. The
        // entry is added under the registry's lock taken before the task can end.
        let held = Held {
            _slot: slot,
            counters: counters.clone(),
            registry: silent.clone(),
            id,
        };
        let mut open = silent.lock();
        let task = tokio::spawn(async move {
            let _held = held;
            let _ = connection.await;
        });
        open.push_back((id, spoke, task.abort_handle()));
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "HTTP requests still in flight after {:?}; closing them",
            limits.shutdown_grace
        );
    }
    Ok(())
}

/// The open connections in order of arrival, with whether each has sent a byte: the
/// oldest silent one is closed to make room when the limit is reached.
#[derive(Default)]
struct Silent {
    open: std::sync::Mutex<
        std::collections::VecDeque<(u64, Arc<AtomicBool>, tokio::task::AbortHandle)>,
    >,
}

impl Silent {
    fn forget(&self, id: u64) {
        self.lock().retain(|(known, _, _)| *known != id);
    }

    /// Closes the oldest connection that has not sent a byte; whether there was one.
    fn evict_oldest(&self) -> bool {
        let mut open = self.lock();
        let Some(at) = open
            .iter()
            .position(|(_, spoke, _)| !spoke.load(Ordering::Relaxed))
        else {
            return false;
        };
        if let Some((_, _, task)) = open.remove(at) {
            task.abort();
        }
        true
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::VecDeque<(u64, Arc<AtomicBool>, tokio::task::AbortHandle)>,
    > {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a connection holds while it is open.
struct Held {
    _slot: tokio::sync::OwnedSemaphorePermit,
    counters: Arc<HttpCounters>,
    registry: Arc<Silent>,
    id: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.counters
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
        self.registry.forget(self.id);
    }
}

/// A connection's socket that notes when the client first sends something.
struct Spoken {
    inner: tokio::net::TcpStream,
    spoke: Arc<AtomicBool>,
}

impl tokio::io::AsyncRead for Spoken {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.spoke.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Spoken {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Wraps each request's body so that a pause longer than `timeout` ends it with an
/// error (the handler answers 400): a body trickled a byte at a time holds a
/// connection no longer than a stalled one.
async fn idle_bodies(
    timeout: Duration,
    counters: Arc<HttpCounters>,
    req: Request,
    next: Next,
) -> Response {
    let req = req.map(|body| {
        axum::body::Body::new(IdleBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            counters,
        })
    });
    next.run(req).await
}

struct IdleBody {
    inner: axum::body::Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    counters: Arc<HttpCounters>,
}

impl http_body::Body for IdleBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + this.timeout;
                this.deadline.as_mut().reset(next);
                Poll::Ready(frame)
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.counters.bodies_stalled.fetch_add(1, Ordering::Relaxed);
                    Poll::Ready(Some(Err(axum::Error::new(format!(
                        "the request body stalled for {:?}",
                        this.timeout
                    )))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
