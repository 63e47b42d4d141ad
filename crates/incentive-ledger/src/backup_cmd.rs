//! `incentive-ledger backup --to DIR`: a consistent copy of a ledger's log in a new data
//! directory, which `verify`, `replay` and `serve` accept — taken from a directory no
//! process holds (`--data-dir`), or through the running service that holds it (`--url`,
//! `GET /v1/backup`). The copy is verified before the command says it is done.

use anyhow::{bail, Context, Result};
use clap::Args;
use ledger_log::backup::{BackupError, Summary};
use std::path::PathBuf;

#[derive(Args)]
pub struct BackupArgs {
    /// Where the copy goes: a new (or empty) directory.
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Copy this data directory (no process may hold it: stop the service, or use --url).
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "url",
        required_unless_present = "url"
    )]
    pub data_dir: Option<PathBuf>,
    /// Take the copy through the running service's HTTP API, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "INCENTIVE_LEDGER_URL")]
    pub url: Option<String>,
    /// The API's bearer token (an admin or finance one).
    #[arg(long, env = "INCENTIVE_LEDGER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Skip verifying the copy.
    #[arg(long)]
    pub no_verify: bool,
}

pub fn backup(args: BackupArgs) -> Result<()> {
    let summary = match (&args.data_dir, &args.url) {
        (Some(dir), _) => {
            let log = crate::log_cmd::open(dir)?;
            ledger_log::backup::backup_to(&log, &args.to).map_err(|e| explain(e, &args))?
        }
        (None, Some(url)) => {
            let token = args.token.as_deref().context(
                "--url needs --token (or INCENTIVE_LEDGER_TOKEN): an admin or finance token",
            )?;
            through_service(url, token, &args)?
        }
        (None, None) => bail!("give --data-dir or --url"),
    };
    println!(
        "backed up {} records (through position {}), {} quarantined inputs and {} duplicate marks into {}",
        summary.head.last_seq,
        summary.head.last_seq,
        summary.quarantined,
        summary.duplicates,
        args.to.display()
    );
    if args.no_verify {
        return Ok(());
    }
    let copy = crate::log_cmd::open(&args.to)?;
    let report = ledger_log::verify(&copy, &mut |_| {}).context("cannot verify the copy")?;
    if !report.ok() {
        bail!(
            "the copy in {} does not verify: {}",
            args.to.display(),
            report.problems.join("; ")
        );
    }
    println!("verified: hash chain, sequence and identities of the copy are sound");
    Ok(())
}

fn explain(e: BackupError, args: &BackupArgs) -> anyhow::Error {
    let e = anyhow::Error::new(e);
    match e.downcast_ref::<BackupError>() {
        Some(BackupError::Damaged(_)) => e.context(format!(
            "the backup was not completed; remove {} and try again",
            args.to.display()
        )),
        _ => e,
    }
}

/// `host:port` and path of an `http://` URL.
fn endpoint(url: &str) -> Result<(String, String)> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!(
            "--url {url}: only http:// is spoken here (the service serves plain HTTP; reach a TLS front end through a local address)"
        );
    };
    let (authority, base) = match rest.split_once('/') {
        Some((a, p)) => (a, format!("/{}", p.trim_end_matches('/'))),
        None => (rest, String::new()),
    };
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((
        authority,
        format!("{}/v1/backup", base.trim_end_matches('/')),
    ))
}

/// `GET /v1/backup` from the service, restored into `--to` as it arrives.
///
/// One GET to the service over HTTP/1.1 with hyper's own client connection (already in
/// the build through the HTTP server): a client crate would add TLS stacks and
/// connection pools this one request does not need.
fn through_service(url: &str, token: &str, args: &BackupArgs) -> Result<Summary> {
    use http_body_util::BodyExt;
    let (authority, path) = endpoint(url)?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
    let to = args.to.clone();
    let restore = std::thread::spawn(move || ledger_log::backup::restore_chunks(rx, &to));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let fetched: Result<()> = runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(&authority)
            .await
            .with_context(|| {
                format!("cannot connect to {authority}: is `incentive-ledger serve` running there?")
            })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .context("the HTTP connection failed")?;
        tokio::spawn(connection);
        let request = hyper::Request::get(&path)
            .header(hyper::header::HOST, &authority)
            .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .context("cannot build the request")?;
        let response = sender
            .send_request(request)
            .await
            .context("the request failed")?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let text = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            bail!(
                "{url} answered {status}: {}",
                String::from_utf8_lossy(&text).trim()
            );
        }
        while let Some(frame) = body.frame().await {
            let frame = frame.context("the backup stream broke off")?;
            if let Ok(data) = frame.into_data() {
                // Waits while the restore is behind (a bounded channel).
                if tx.send(data.to_vec()).is_err() {
                    break; // the restore stopped: its error says why
                }
            }
        }
        Ok(())
    });
    drop(tx);
    let restored = restore
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    fetched?;
    restored.map_err(|e| explain(e, args))
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_name_the_endpoint() {
        assert_eq!(
            super::endpoint("http://127.0.0.1:8080").unwrap(),
            ("127.0.0.1:8080".into(), "/v1/backup".into())
        );
        assert_eq!(
            super::endpoint("http://ledger.internal/api/").unwrap(),
            ("ledger.internal:80".into(), "/api/v1/backup".into())
        );
        assert!(super::endpoint("https://x")
            .unwrap_err()
            .to_string()
            .contains("only http://"));
    }
}
