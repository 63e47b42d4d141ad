//! What operators and auditors ask of a running service instead of its data directory,
//! which the service holds: `GET /v1/verify` (the checks of `incentive-ledger verify`,
//! up to the head stored when it starts) and `GET /v1/backup` (a backup stream that
//! `incentive-ledger backup` restores into a new directory). Staff only.

use crate::planning::answer_error;
use crate::routes::{query, staff_only, stored_head, streamed, NoQuery};
use crate::{ApiResult, ApiState, Role};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
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
    // The header names the head the stream is bounded by, read once for both.
    let head = stored_head(&state).await?;
    let handle = state.handle.clone();
    streamed(
        "backup",
        "application/vnd.incentive-ledger.backup",
        ("x-ledger-backup-through", head.last_seq),
        move |out| {
            // The stream's end frame is missing after an error, so a restore refuses it.
            let mut buffered = std::io::BufWriter::with_capacity(1 << 20, out);
            handle
                .backup(head, &mut buffered)
                .map(|_| ())
                .map_err(|e| ledger_service::error_chain(&e))
        },
    )
}
