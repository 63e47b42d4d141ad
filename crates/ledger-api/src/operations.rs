//! What operators and auditors ask of a running service instead of its data directory,
//! which the service holds: `GET /v1/verify` (the checks of `incentive-ledger verify`,
//! up to the head stored when it starts) and `GET /v1/backup` (a backup stream that
//! `incentive-ledger backup` restores into a new directory). Staff only.

use crate::planning::answer_error;
use crate::routes::{query, staff_only, NoQuery};
use crate::{ApiError, ApiResult, ApiState, Role};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use ledger_service::CheckpointStatus;
use serde_json::json;

/// `GET /v1/verify`: the data directory re-checked from its bytes in the background
/// slot (one at a time with simulations: a second gets 429). 200 either way; `ok` says.
pub(crate) async fn verify(
    State(state): State<ApiState>,
    axum::Extension(role): axum::Extension<Role>,
    q: Result<Query<NoQuery>, QueryRejection>,
) -> ApiResult {
    staff_only(&role)?;
    query(q)?;
    let report = match state.handle.verify().await {
        Ok(r) => r,
        Err(e) => return Ok(answer_error(e)),
    };
    let checkpoint = match &report.checkpoint {
        CheckpointStatus::Absent => json!({ "status": "absent" }),
        CheckpointStatus::Matches { seq } => json!({ "status": "matches", "seq": seq }),
        CheckpointStatus::Differs(why) => json!({ "status": "differs", "message": why }),
    };
    Ok(Json(json!({
        "ok": report.ok(),
        "records": report.records,
        "quarantined": report.quarantined,
        "duplicates": report.duplicates,
        "first_bad_seq": report.first_bad_seq,
        "problems": report.problems,
        "checkpoint": checkpoint,
    }))
    .into_response())
}

/// `GET /v1/backup`: the log's backup stream ([`ledger_log::backup`]), bounded by the
/// head stored when it starts, written from a thread of its own a bounded number of
/// chunks ahead of the client; `X-Ledger-Backup-Through` names that head's position.
pub(crate) async fn backup(
    State(state): State<ApiState>,
    axum::Extension(role): axum::Extension<Role>,
    q: Result<Query<NoQuery>, QueryRejection>,
) -> ApiResult {
    staff_only(&role)?;
    query(q)?;
    let through = state.handle.stored_position().map_err(|e| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "log_unavailable",
        message: ledger_service::error_chain(&e),
    })?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(8);
    let handle = state.handle.clone();
    std::thread::Builder::new()
        .name("backup".into())
        .spawn(move || {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, ChunkSender(tx.clone()));
            let done = handle.backup(&mut out);
            drop(out);
            if let Err(e) = done {
                // The client sees the body end early, with an error; the stream's end
                // frame is missing, so a restore refuses it.
                let _ =
                    tx.blocking_send(Err(std::io::Error::other(ledger_service::error_chain(&e))));
            }
        })
        .map_err(|e| ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "query_failed",
            message: format!("the backup could not start: {e}"),
        })?;
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = axum::body::Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.incentive-ledger.backup"),
    );
    if let Ok(v) = HeaderValue::from_str(&through.to_string()) {
        headers.insert("x-ledger-backup-through", v);
    }
    Ok(response)
}

/// Hands the backup stream's bytes to the response, waiting while the client is slow.
struct ChunkSender(tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>);

impl std::io::Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(bytes::Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
