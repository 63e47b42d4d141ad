//! `program check` and `program publish`: authoring a program. `check` validates a
//! program's data (or a whole `program.published` event) exactly as intake would and
//! prints what the ledger understood in plain words; `publish` wraps it in a CloudEvent
//! with a deterministic id and prints it, or sends it to the inbound stream.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use ledger_core::{EventData, IntakeRefusal};
use serde_json::{Map, Value};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum ProgramCommand {
    /// Validate a program (its data, or a program.published event) as intake would and
    /// print it in plain words; exit 1 with the refusal's code and message.
    Check(CheckArgs),
    /// Wrap a program's data in a program.published CloudEvent with a deterministic id,
    /// and print it (one NDJSON line) or publish it with --nats-url.
    Publish(Box<PublishProgramArgs>),
}

#[derive(Args)]
pub struct CheckArgs {
    /// A JSON file: a program's data, or a whole program.published event.
    pub file: PathBuf,
}

#[derive(Args)]
pub struct PublishProgramArgs {
    /// A JSON file: a program's data (a whole event is taken as it is, after the check).
    pub file: PathBuf,
    /// The version to publish as (default: the file's `version`, else 1). A new version
    /// is the current one + 1: see `GET /v1/programs/{id}` or `report`.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub version: Option<u64>,
    /// The event's `source`.
    #[arg(long, default_value = "incentive-ledger/program")]
    pub source: String,
    /// The event's `time` (RFC 3339; default: the program's start date, 00:00 UTC — a
    /// program's publication time decides nothing in the fold).
    #[arg(long)]
    pub time: Option<String>,
    #[command(flatten)]
    pub send: crate::nats_cmd::SendArgs,
}

pub fn run(command: ProgramCommand) -> Result<()> {
    match command {
        ProgramCommand::Check(args) => check(args),
        ProgramCommand::Publish(args) => publish(*args),
    }
}

/// The file as a program.published event: itself if it is one (it has `specversion` or
/// `type`), else its data wrapped in an envelope built from `envelope`.
fn as_event(
    file: &PathBuf,
    envelope: impl FnOnce(&Map<String, Value>) -> Map<String, Value>,
) -> Result<Vec<u8>> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    // Malformed JSON is intake's to name: hand the bytes over as they are.
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(bytes);
    };
    if object.contains_key("specversion") || object.contains_key("type") {
        return Ok(bytes);
    }
    let mut event = envelope(&object);
    event.insert("type".into(), Value::from("program.published"));
    event.insert("data".into(), Value::Object(object));
    Ok(serde_json::to_vec(&Value::Object(event))?)
}

/// Intake's verdict on `raw`: the event, or the refusal as an error naming its code.
fn checked(raw: &[u8]) -> Result<ledger_core::Event> {
    match ledger_core::intake::check_event(raw) {
        Ok(event) if matches!(event.data, EventData::ProgramPublished(_)) => Ok(event),
        Ok(event) => bail!(
            "refused: this is a {} event, not program.published",
            event.event_type().as_str()
        ),
        Err(IntakeRefusal { code, message, .. }) => bail!("refused: {code}: {message}"),
    }
}

fn check(args: CheckArgs) -> Result<()> {
    let raw = as_event(&args.file, |data| {
        envelope(
            "program-check",
            "incentive-ledger/program",
            "2000-01-01T00:00:00Z",
            data,
        )
    })?;
    let event = checked(&raw)?;
    let EventData::ProgramPublished(def) = &event.data else {
        unreachable!("checked() returns program.published only");
    };
    println!("OK: a valid program.published");
    for line in ledger_core::describe::describe(def) {
        println!("  {line}");
    }
    Ok(())
}

/// An envelope for `data` (whose `version` is set by the caller): `id` is the program
/// and version, so publishing the same version twice is an exact re-send or a conflict,
/// never a second version.
fn envelope(id: &str, source: &str, time: &str, _data: &Map<String, Value>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("specversion".into(), Value::from("1.0"));
    m.insert("id".into(), Value::from(id));
    m.insert("source".into(), Value::from(source));
    m.insert("time".into(), Value::from(time));
    m
}

fn publish(args: PublishProgramArgs) -> Result<()> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let mut data: Map<String, Value> = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(o)) if !(o.contains_key("specversion") || o.contains_key("type")) => o,
        Ok(Value::Object(_)) => {
            // A whole event: checked and sent as it is.
            checked(&bytes)?;
            return send(&args, bytes);
        }
        _ => {
            checked(&bytes)?;
            bail!("{} is not a JSON object", args.file.display())
        }
    };
    let version = args
        .version
        .or_else(|| data.get("version").and_then(Value::as_u64))
        .unwrap_or(1);
    data.insert("version".into(), Value::from(version));
    let program_id = data
        .get("program_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let time = match &args.time {
        Some(t) => t.clone(),
        None => data
            .get("start_date")
            .and_then(Value::as_str)
            .map(|d| format!("{d}T00:00:00Z"))
            .unwrap_or_else(|| "1970-01-01T00:00:00Z".into()),
    };
    let mut event = envelope(
        &format!("program:{program_id}:v{version}"),
        &args.source,
        &time,
        &data,
    );
    event.insert("type".into(), Value::from("program.published"));
    event.insert("data".into(), Value::Object(data));
    let raw = serde_json::to_vec(&Value::Object(event))?;
    checked(&raw)?;
    send(&args, raw)
}

/// Prints the event, or publishes it when a NATS server was named.
fn send(args: &PublishProgramArgs, raw: Vec<u8>) -> Result<()> {
    if args.send.send {
        return args.send.publish(vec![raw]);
    }
    println!("{}", String::from_utf8_lossy(&raw));
    Ok(())
}
