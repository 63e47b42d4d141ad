//! `incentive-ledger redrive`: lists refused events by code, stage, program, partner or
//! arrival range, and sends the chosen ones again.
//!
//! - An event the **fold** refused is in the log: it is re-driven as a new event
//!   ([`ledger_core::redrive`]: id `redrive:<id>`, the original named in
//!   `redrivessource` / `redrivesid`), unless that identity is in the log already.
//! - An input **intake** refused (the quarantine) is not in the log, so its own identity
//!   is judged afresh (CONTRACT §1): it is sent again as it was, if intake takes it now
//!   (e.g. an event that came on another type's subject) and its identity is not in the
//!   log. Otherwise it is listed with the reason it cannot be re-driven as it is — fix
//!   it and send it again.
//!
//! Without `--out` or `--send` it only lists what it would do.

use crate::log_cmd::{open, replay_dir};
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use ledger_core::replay::Rejection;
use ledger_core::{identity_key, EventData};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Stage {
    /// Refused at intake (not in the log).
    Quarantine,
    /// Refused by the fold (in the log).
    Business,
}

#[derive(Args)]
pub struct RedriveArgs {
    #[arg(long, env = "INCENTIVE_LEDGER_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Only refusals with this code (e.g. unknown_program); repeatable.
    #[arg(long)]
    pub code: Vec<String>,
    /// Only refusals of this stage.
    #[arg(long, value_enum)]
    pub stage: Option<Stage>,
    /// Only events of this program (`program_id` of their data).
    #[arg(long)]
    pub program: Option<String>,
    /// Only events of this partner (`partner_id` of their data).
    #[arg(long)]
    pub partner: Option<String>,
    /// Only refusals from this line (the number `rejected` lists first: the line in its
    /// file for `ingest`, the arrival number for messages).
    #[arg(long)]
    pub from: Option<u64>,
    /// Only refusals up to this line (as --from).
    #[arg(long)]
    pub to: Option<u64>,
    /// Write the events to re-drive to this NDJSON file (for `publish` or `ingest`).
    #[arg(long, conflicts_with = "send")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub send: crate::nats_cmd::SendArgs,
}

/// What becomes of one selected refusal.
enum Plan {
    /// Sent as `id` (new for a business refusal, its own for a quarantined input).
    Send { id: String, raw: Vec<u8> },
    /// Not sent, and why.
    Skip(String),
}

/// The refused input's raw bytes, by where it is kept.
enum Kept {
    Quarantined(Vec<u8>),
    Logged([u8; 16]),
}

pub fn redrive(args: RedriveArgs) -> Result<()> {
    let codes: Vec<ledger_core::Code> = args
        .code
        .iter()
        .map(|c| {
            ledger_core::Code::parse(c)
                .with_context(|| format!("--code {c}: not a refusal code (CONTRACT §6)"))
        })
        .collect::<Result<_>>()?;
    let mut replayed = replay_dir(&args.data_dir, None, None, true)?;
    let log = open(&args.data_dir)?;
    // The quarantine in arrival order: the replay lists its refusals in the same order.
    let mut quarantine = log
        .reader()
        .quarantined()
        .context("cannot read the quarantine")?
        .into_iter();
    let mut selected: Vec<(Rejection, Kept)> = Vec::new();
    replayed.for_each_rejection(&mut |r| {
        let stage = if r.code.is_intake() {
            Stage::Quarantine
        } else {
            Stage::Business
        };
        let quarantined = if stage == Stage::Quarantine {
            quarantine
                .next()
                .filter(|q| q.code == r.code && q.line == r.line)
        } else {
            None
        };
        if args.stage.is_some_and(|s| s != stage)
            || (!codes.is_empty() && !codes.contains(&r.code))
            || args.from.is_some_and(|f| r.line < f)
            || args.to.is_some_and(|t| r.line > t)
        {
            return;
        }
        let kept = match (stage, &r.identity) {
            (Stage::Quarantine, _) => match quarantined {
                Some(q) => Kept::Quarantined(q.raw),
                None => return,
            },
            (Stage::Business, Some((source, id))) => Kept::Logged(identity_key(source, id)),
            (Stage::Business, None) => return,
        };
        selected.push((r.clone(), kept));
    })?;
    // One pass over the log: the raw events of the business refusals, and which of the
    // identities the plans would send are logged already (and where).
    let mut wanted: HashMap<[u8; 16], Option<Vec<u8>>> = selected
        .iter()
        .filter_map(|(_, k)| match k {
            Kept::Logged(key) => Some((*key, None)),
            Kept::Quarantined(_) => None,
        })
        .collect();
    let mut logged_at: HashMap<[u8; 16], u64> = HashMap::new();
    // The identities the plans would send: looked up for every record of the log.
    let sent_keys: HashSet<[u8; 16]> = selected
        .iter()
        .filter_map(|(r, kept)| {
            let (source, id) = r.identity.as_ref()?;
            Some(match kept {
                Kept::Logged(_) => {
                    identity_key(source, &ledger_core::redrive::redrive_id(source, id))
                }
                Kept::Quarantined(_) => identity_key(source, id),
            })
        })
        .collect();
    let reader = log.reader();
    for record in reader.records_from(1) {
        let record = record.context("cannot read the log")?;
        if let Some(slot) = wanted.get_mut(&record.identity) {
            *slot = Some(record.raw.clone());
        }
        if sent_keys.contains(&record.identity) {
            logged_at.insert(record.identity, record.seq);
        }
    }
    let mut plans = Vec::with_capacity(selected.len());
    for (r, kept) in &selected {
        let raw = match kept {
            Kept::Quarantined(raw) => raw.clone(),
            Kept::Logged(key) => match wanted.get(key).cloned().flatten() {
                Some(raw) => raw,
                None => {
                    plans.push((r, Plan::Skip("its record is not in the log".into())));
                    continue;
                }
            },
        };
        if !matches_subject(&raw, args.program.as_deref(), args.partner.as_deref()) {
            continue;
        }
        plans.push((r, plan(r, kept, raw, &logged_at)));
    }
    report(&plans)?;
    let events: Vec<Vec<u8>> = plans
        .into_iter()
        .filter_map(|(_, p)| match p {
            Plan::Send { raw, .. } => Some(raw),
            Plan::Skip(_) => None,
        })
        .collect();
    let count = events.len();
    if let Some(path) = &args.out {
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        );
        for e in &events {
            file.write_all(e)?;
            file.write_all(b"\n")?;
        }
        file.flush()?;
        eprintln!("{count} events to re-drive written to {}", path.display());
    } else if args.send.send {
        if count == 0 {
            eprintln!("nothing to re-drive");
            return Ok(());
        }
        args.send.publish(events)?;
    } else {
        eprintln!(
            "{count} events would be re-driven: --send publishes them, --out FILE writes them"
        );
    }
    Ok(())
}

/// What to do with one refusal whose input is `raw`.
fn plan(r: &Rejection, kept: &Kept, raw: Vec<u8>, logged_at: &HashMap<[u8; 16], u64>) -> Plan {
    match kept {
        Kept::Logged(_) => {
            let Some((id, bytes)) = ledger_core::redrive::redriven(&raw) else {
                return Plan::Skip("its record is not a JSON object".into());
            };
            let source = r.identity.as_ref().map_or("", |(s, _)| s.as_str());
            match logged_at.get(&identity_key(source, &id)) {
                Some(seq) => Plan::Skip(format!("re-driven already as {id} (log position {seq})")),
                None => Plan::Send { id, raw: bytes },
            }
        }
        Kept::Quarantined(_) => {
            if let Err(refusal) = ledger_core::intake::check(&raw) {
                return Plan::Skip(format!(
                    "intake still refuses it ({}: {}): fix it and send it again under its identity",
                    refusal.code.as_str(),
                    refusal.message
                ));
            }
            let Some((source, id)) = &r.identity else {
                return Plan::Skip("it has no identity".into());
            };
            match logged_at.get(&identity_key(source, id)) {
                Some(seq) if r.code == ledger_core::Code::DuplicateConflict => Plan::Skip(format!(
                    "its identity is in the log with other content (position {seq}): send the correction under a new id"
                )),
                Some(seq) => Plan::Skip(format!("in the log already (position {seq})")),
                None => Plan::Send {
                    id: id.clone(),
                    raw,
                },
            }
        }
    }
}

/// Whether the event's data names `program` and `partner` (where given).
fn matches_subject(raw: &[u8], program: Option<&str>, partner: Option<&str>) -> bool {
    if program.is_none() && partner.is_none() {
        return true;
    }
    let Ok(accepted) = ledger_core::intake::check(raw) else {
        return false;
    };
    let (event_partner, event_program) = subjects(&accepted.event.data);
    program.is_none_or(|p| event_program == Some(p))
        && partner.is_none_or(|p| event_partner == Some(p))
}

/// The partner and program an event's data names, where it names them.
fn subjects(data: &EventData) -> (Option<&str>, Option<&str>) {
    match data {
        EventData::ProgramPublished(p) => (None, Some(p.program_id.as_str())),
        EventData::PartnerEnrolled {
            partner_id,
            program_id,
            ..
        }
        | EventData::PartnerWithdrawn {
            partner_id,
            program_id,
        }
        | EventData::ClaimSubmitted {
            partner_id,
            program_id,
            ..
        } => (Some(partner_id.as_str()), Some(program_id.as_str())),
        EventData::SaleRecorded(s) => (Some(s.partner_id.as_str()), None),
        EventData::SaleReturned(r) => (Some(r.partner_id.as_str()), None),
        EventData::TrainingCompleted { partner_id, .. } => (Some(partner_id.as_str()), None),
        EventData::ClaimDecided { .. } => (None, None),
        EventData::PeriodClosed { program_id, .. } => (None, Some(program_id.as_str())),
        EventData::AdjustmentPosted {
            partner_id,
            program_id,
            ..
        } => (Some(partner_id.as_str()), Some(program_id.as_str())),
    }
}

/// The plan as a table on stdout: arrival, stage, code, who, what becomes of it.
fn report(plans: &[(&Rejection, Plan)]) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for (r, p) in plans {
        let action = match p {
            Plan::Send { id, .. } => format!("re-drive as {id}"),
            Plan::Skip(why) => format!("skip: {why}"),
        };
        writeln!(out, "{}  {action}", crate::log_cmd::refusal_columns(r))?;
    }
    out.flush()?;
    Ok(())
}
