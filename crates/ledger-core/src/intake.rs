//! Intake: from one input's raw bytes to a typed [`Event`], or a refusal (SPEC §1–§3).
//!
//! Runs the checks of SPEC §1 in order — `too_large`, `malformed_json`,
//! `invalid_envelope`, `unknown_type`, `invalid_data` — and returns the event together
//! with its content digest, which the caller uses for the identity check
//! (`duplicate_conflict` or exact duplicate) against its log. It keeps no state and does
//! no business checks: those belong to the fold.

use crate::event::{
    Eligibility, Event, EventData, EventType, ProgramDef, Return, ReturnLine, Sale, SaleLine, Text,
};
use crate::json::{self, Json};
use crate::refusal::Code;
use crate::rules::{
    Accelerator, Kind, Measure, RebateMode, Reward, Rules, SpifPayout, SpifRate, Threshold, Tier,
};
use crate::values::{
    char_len, is_identifier, parse_amount, parse_date, parse_time_utc_date, Currency, PeriodKind,
    PeriodLabel,
};
use rust_decimal::Decimal;
use std::borrow::Cow;
use std::fmt;

/// Largest input accepted, in bytes (an NDJSON line without its line ending).
pub const MAX_INPUT_BYTES: usize = 65_536;

/// An input that passed intake: the typed event and the digest of its JSON content.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub event: Event,
    pub content_digest: [u8; 32],
}

/// An input refused at intake, kept in quarantine by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeRefusal {
    pub code: Code,
    pub message: String,
    /// `(source, id)` when the input was a JSON object whose `source` and `id` are
    /// strings within their bounds (SPEC §7), even if the rest is invalid.
    pub identity: Option<(String, String)>,
    /// The `type` attribute when it is one of the event types (for metrics by type).
    pub event_type: Option<EventType>,
}

/// Runs SPEC §1 checks 1–5 on one input.
pub fn check(raw: &[u8]) -> Result<Accepted, IntakeRefusal> {
    check_inner(raw, true).map(|(event, digest)| Accepted {
        event,
        content_digest: digest.unwrap_or_default(),
    })
}

/// As [`check`], without the content digest: for inputs already in a log, whose digest
/// was recorded when they were appended (the identity check is not repeated on replay).
pub fn check_event(raw: &[u8]) -> Result<Event, IntakeRefusal> {
    check_inner(raw, false).map(|(event, _)| event)
}

fn check_inner(raw: &[u8], digest: bool) -> Result<(Event, Option<[u8; 32]>), IntakeRefusal> {
    let refuse = |code, message: String, identity| IntakeRefusal {
        code,
        message,
        identity,
        event_type: None,
    };
    if raw.len() > MAX_INPUT_BYTES {
        return Err(refuse(
            Code::TooLarge,
            format!(
                "the input is {} bytes; at most {MAX_INPUT_BYTES} bytes are accepted",
                raw.len()
            ),
            None,
        ));
    }
    let root = json::parse(raw)
        .map_err(|e| refuse(Code::MalformedJson, format!("not I-JSON: {e}"), None))?;
    // Only refusals need the identity as owned strings.
    let identity = || identity_of(&root);
    let envelope = envelope(&root).map_err(|m| refuse(Code::InvalidEnvelope, m, identity()))?;
    let Some(event_type) = EventType::parse(envelope.type_name) else {
        return Err(refuse(
            Code::UnknownType,
            format!(
                "type {:?} is not an event type the ledger accepts (expected one of {})",
                envelope.type_name,
                EventType::ALL.map(|t| t.as_str()).join(", ")
            ),
            identity(),
        ));
    };
    let data = event_data(event_type, envelope.data).map_err(|e| IntakeRefusal {
        event_type: Some(event_type),
        ..refuse(
            Code::InvalidData,
            format!("{}: {}", e.path, e.problem),
            identity(),
        )
    })?;
    let event = Event {
        source: Text::from(envelope.source),
        id: Text::from(envelope.id),
        time: Text::from(envelope.time),
        date: envelope.date,
        data,
    };
    Ok((event, digest.then(|| root.content_digest())))
}

fn identity_of(root: &Json) -> Option<(String, String)> {
    match (root.get("source"), root.get("id")) {
        (Some(Json::Str(source)), Some(Json::Str(id)))
            if (1..=256).contains(&char_len(source)) && (1..=128).contains(&char_len(id)) =>
        {
            Some((source.to_string(), id.to_string()))
        }
        _ => None,
    }
}

struct Envelope<'a> {
    source: &'a str,
    id: &'a str,
    type_name: &'a str,
    time: &'a str,
    date: chrono::NaiveDate,
    data: &'a [(Cow<'a, str>, Json<'a>)],
}

/// A short rendering of a JSON value for messages.
fn show(v: &Json) -> String {
    let mut s = match v {
        Json::Null => "null".to_string(),
        Json::Bool(b) => b.to_string(),
        Json::Num(n) => n.to_string(),
        Json::Str(s) => format!("{s:?}"),
        Json::Arr(items) => format!("an array of {} items", items.len()),
        Json::Obj(_) => "an object".to_string(),
    };
    if s.chars().count() > 80 {
        s = s.chars().take(77).collect::<String>() + "...";
    }
    s
}

/// A present, non-null attribute (SPEC §1: an optional field that is `null` is absent).
fn present<'a>(v: Option<&'a Json<'a>>) -> Option<&'a Json<'a>> {
    v.filter(|j| !matches!(j, Json::Null))
}

fn envelope<'a>(root: &'a Json<'a>) -> Result<Envelope<'a>, String> {
    let Json::Obj(_) = root else {
        return Err(format!(
            "the event must be a JSON object (a CloudEvent), got {}",
            root.type_name()
        ));
    };
    let string_attr = |name: &str, min: usize, max: usize| -> Result<&'a str, String> {
        match present(root.get(name)) {
            None => Err(format!("attribute {name} is required but missing")),
            Some(Json::Str(s)) => {
                let n = char_len(s);
                if n < min || n > max {
                    Err(format!(
                        "attribute {name} must be {min}–{max} characters, got {n}"
                    ))
                } else {
                    Ok(s.as_ref())
                }
            }
            Some(other) => Err(format!(
                "attribute {name} must be a string, got {}",
                show(other)
            )),
        }
    };
    let specversion = string_attr("specversion", 0, usize::MAX)?;
    if specversion != "1.0" {
        return Err(format!(
            "attribute specversion must be \"1.0\", got {specversion:?}"
        ));
    }
    let id = string_attr("id", 1, 128)?;
    let source = string_attr("source", 1, 256)?;
    let type_name = string_attr("type", 0, usize::MAX)?;
    let time = string_attr("time", 0, usize::MAX)?;
    let date = parse_time_utc_date(time).ok_or_else(|| {
        format!(
            "attribute time must be an RFC 3339 date-time with an offset, within years \
             0001–9999 in UTC (e.g. \"2026-03-01T10:00:00Z\"), got {time:?}"
        )
    })?;
    let data = match present(root.get("data")) {
        None => return Err("attribute data is required but missing".into()),
        Some(Json::Obj(members)) => members.as_slice(),
        Some(other) => {
            return Err(format!(
                "attribute data must be a JSON object, got {}",
                show(other)
            ))
        }
    };
    match present(root.get("subject")) {
        None => {}
        Some(Json::Str(s)) if !s.is_empty() => {}
        Some(other) => {
            return Err(format!(
                "attribute subject, when present, must be a non-empty string, got {}",
                show(other)
            ))
        }
    }
    match present(root.get("datacontenttype")) {
        None => {}
        Some(Json::Str(s)) if s == "application/json" => {}
        Some(other) => {
            return Err(format!(
                "attribute datacontenttype, when present, must be \"application/json\", got {}",
                show(other)
            ))
        }
    }
    Ok(Envelope {
        source,
        id,
        type_name,
        time,
        date,
        data,
    })
}

/// A shape violation inside `data`: where, and what was wrong.
#[derive(Debug)]
struct DataError {
    path: String,
    problem: String,
}

type DResult<T> = Result<T, DataError>;

/// Where an object sits inside the event (`data.rules.tiers[2]`), kept as its segments
/// and rendered only when a message needs it: checking a valid event builds no strings.
#[derive(Clone, Copy)]
struct Path {
    segments: [(&'static str, Option<usize>); Path::DEPTH],
    len: usize,
}

impl Path {
    /// Deeper than any object in an event's `data` (`data.rules.accelerator`).
    const DEPTH: usize = 6;

    fn root(name: &'static str) -> Path {
        let mut segments = [("", None); Path::DEPTH];
        segments[0] = (name, None);
        Path { segments, len: 1 }
    }

    fn child(&self, key: &'static str, index: Option<usize>) -> Path {
        let mut next = *self;
        let at = next.len.min(Path::DEPTH - 1);
        next.segments[at] = (key, index);
        next.len = at + 1;
        next
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, index)) in self.segments[..self.len].iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            f.write_str(name)?;
            if let Some(index) = index {
                write!(f, "[{index}]")?;
            }
        }
        Ok(())
    }
}

/// A reader over one JSON object inside `data`, naming fields by their path.
struct Fields<'a> {
    members: &'a [(Cow<'a, str>, Json<'a>)],
    path: Path,
}

impl<'a> Fields<'a> {
    fn new(members: &'a [(Cow<'a, str>, Json<'a>)], path: Path) -> Fields<'a> {
        Fields { members, path }
    }

    fn path_of(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    fn err<T>(&self, key: &str, problem: impl Into<String>) -> DResult<T> {
        Err(DataError {
            path: self.path_of(key),
            problem: problem.into(),
        })
    }

    fn opt(&self, key: &str) -> Option<&'a Json<'a>> {
        present(self.members.iter().find(|(k, _)| k == key).map(|(_, v)| v))
    }

    fn req(&self, key: &str) -> DResult<&'a Json<'a>> {
        match self.opt(key) {
            Some(v) => Ok(v),
            None => self.err(key, "is required but missing"),
        }
    }

    /// Refuses keys outside `allowed` (used inside `eligibility` and `rules`).
    fn deny_unknown(&self, allowed: &[&str]) -> DResult<()> {
        for (k, _) in self.members {
            if !allowed.contains(&k.as_ref()) {
                return self.err(
                    k,
                    format!(
                        "is not a known field here (allowed: {}); unknown rule fields are refused so that no rule is silently ignored",
                        allowed.join(", ")
                    ),
                );
            }
        }
        Ok(())
    }

    fn string_value(&self, key: &str, v: &'a Json<'a>, expected: &str) -> DResult<&'a str> {
        match v {
            Json::Str(s) => Ok(s),
            other => self.err(key, format!("expected {expected}, got {}", show(other))),
        }
    }

    fn identifier_value(&self, key: &str, v: &'a Json<'a>) -> DResult<Text> {
        const WHAT: &str = "an identifier (1–64 characters of A-Z a-z 0-9 . _ : -)";
        let s = self.string_value(key, v, WHAT)?;
        if is_identifier(s) {
            Ok(Text::from(s))
        } else {
            self.err(key, format!("expected {WHAT}, got {}", show(v)))
        }
    }

    fn identifier(&self, key: &str) -> DResult<Text> {
        let v = self.req(key)?;
        self.identifier_value(key, v)
    }

    fn opt_identifier(&self, key: &str) -> DResult<Option<Text>> {
        self.opt(key)
            .map(|v| self.identifier_value(key, v))
            .transpose()
    }

    fn text_value(&self, key: &str, v: &'a Json<'a>, max: usize) -> DResult<Text> {
        let what = || format!("a non-empty text of at most {max} characters");
        let Json::Str(s) = v else {
            return self.err(key, format!("expected {}, got {}", what(), show(v)));
        };
        let n = char_len(s);
        if n == 0 || n > max {
            return self.err(key, format!("expected {}, got {n} characters", what()));
        }
        Ok(Text::from(s.as_ref()))
    }

    fn text(&self, key: &str, max: usize) -> DResult<Text> {
        let v = self.req(key)?;
        self.text_value(key, v, max)
    }

    fn opt_text(&self, key: &str, max: usize) -> DResult<Option<Text>> {
        self.opt(key)
            .map(|v| self.text_value(key, v, max))
            .transpose()
    }

    fn amount_value(&self, key: &str, v: &'a Json<'a>, rule: AmountRule) -> DResult<Decimal> {
        let what = rule.describe();
        let s = match v {
            Json::Str(s) => s.as_ref(),
            Json::Num(n) => {
                return self.err(
                    key,
                    format!(
                        "expected {what} as a JSON string (e.g. \"12.50\"), got the number {n}"
                    ),
                )
            }
            other => return self.err(key, format!("expected {what}, got {}", show(other))),
        };
        let Some(d) = parse_amount(s) else {
            return self.err(
                key,
                format!(
                    "expected {what}: a decimal string with at most 15 integer and 6 fractional digits, no exponent, no leading zeros, got {}",
                    show(v)
                ),
            );
        };
        if rule.check(d) {
            Ok(d)
        } else {
            self.err(key, format!("expected {what}, got {}", show(v)))
        }
    }

    fn amount(&self, key: &str, rule: AmountRule) -> DResult<Decimal> {
        let v = self.req(key)?;
        self.amount_value(key, v, rule)
    }

    fn opt_amount(&self, key: &str, rule: AmountRule) -> DResult<Option<Decimal>> {
        self.opt(key)
            .map(|v| self.amount_value(key, v, rule))
            .transpose()
    }

    /// A JSON integer literal (no fraction, no exponent) within `min..=max`; larger
    /// literals saturate at `u64::MAX` when `max` is `u64::MAX`.
    fn integer(&self, key: &str, min: u64, max: u64) -> DResult<u64> {
        let v = self.req(key)?;
        let describe = || {
            if max == u64::MAX {
                format!("an integer ≥ {min}")
            } else {
                format!("an integer from {min} to {max}")
            }
        };
        let Json::Num(text) = v else {
            return self.err(key, format!("expected {}, got {}", describe(), show(v)));
        };
        let digits = text.strip_prefix('-').unwrap_or(text);
        let negative = text.starts_with('-');
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return self.err(
                key,
                format!(
                    "expected {} written without fraction or exponent, got {text}",
                    describe()
                ),
            );
        }
        let value: u64 = if negative {
            if digits.bytes().all(|b| b == b'0') {
                0
            } else {
                return self.err(key, format!("expected {}, got {text}", describe()));
            }
        } else {
            digits.parse().unwrap_or(u64::MAX)
        };
        if value < min || value > max {
            return self.err(key, format!("expected {}, got {text}", describe()));
        }
        Ok(value)
    }

    fn boolean(&self, key: &str, default: bool) -> DResult<bool> {
        match self.opt(key) {
            None => Ok(default),
            Some(Json::Bool(b)) => Ok(*b),
            Some(other) => self.err(key, format!("expected true or false, got {}", show(other))),
        }
    }

    fn date(&self, key: &str) -> DResult<chrono::NaiveDate> {
        let v = self.req(key)?;
        let s = self.string_value(key, v, "a date YYYY-MM-DD")?;
        match parse_date(s) {
            Some(d) => Ok(d),
            None => self.err(
                key,
                format!("expected a calendar date YYYY-MM-DD, got {}", show(v)),
            ),
        }
    }

    fn currency(&self, key: &str) -> DResult<Currency> {
        let v = self.req(key)?;
        let s = self.string_value(key, v, "a currency code of 3 upper-case letters")?;
        match Currency::parse(s) {
            Some(c) => Ok(c),
            None => self.err(
                key,
                format!(
                    "expected a currency code of 3 upper-case letters, got {}",
                    show(v)
                ),
            ),
        }
    }

    fn period_label(&self, key: &str) -> DResult<PeriodLabel> {
        let v = self.req(key)?;
        const WHAT: &str = "a period label (\"2026-03\", \"2026-Q1\", \"2026\" or \"program\")";
        let s = self.string_value(key, v, WHAT)?;
        match PeriodLabel::parse(s) {
            Some(p) => Ok(p),
            None => self.err(key, format!("expected {WHAT}, got {}", show(v))),
        }
    }

    fn choice<T>(&self, key: &str, options: &[(&str, T)]) -> DResult<T>
    where
        T: Copy,
    {
        let v = self.req(key)?;
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        let expected = format!("one of {}", names.join(", "));
        let s = self.string_value(key, v, &expected)?;
        match options.iter().find(|(n, _)| *n == s) {
            Some((_, t)) => Ok(*t),
            None => self.err(key, format!("expected {expected}, got {}", show(v))),
        }
    }

    fn object(&self, key: &'static str, v: &'a Json<'a>) -> DResult<Fields<'a>> {
        match v {
            Json::Obj(members) => Ok(Fields::new(members, self.path.child(key, None))),
            other => self.err(key, format!("expected an object, got {}", show(other))),
        }
    }

    fn array(&self, key: &str, v: &'a Json<'a>, min: usize, max: usize) -> DResult<&'a [Json<'a>]> {
        match v {
            Json::Arr(items) if items.len() >= min && items.len() <= max => Ok(items),
            Json::Arr(items) => self.err(
                key,
                format!("expected {min}–{max} items, got {}", items.len()),
            ),
            other => self.err(key, format!("expected an array, got {}", show(other))),
        }
    }

    /// The objects of an array, each with its own path.
    fn objects(&self, key: &'static str, items: &'a [Json<'a>]) -> DResult<Vec<Fields<'a>>> {
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Json::Obj(members) => Ok(Fields::new(members, self.path.child(key, Some(i)))),
                other => Err(DataError {
                    path: format!("{}[{i}]", self.path_of(key)),
                    problem: format!("expected an object, got {}", show(other)),
                }),
            })
            .collect()
    }
}

/// The numeric constraint on an amount field beyond its format.
#[derive(Debug, Clone, Copy)]
enum AmountRule {
    /// ≥ 0.
    NonNegative,
    /// > 0.
    Positive,
    /// Any sign, not zero.
    NonZero,
    /// A rate: 0 ≤ r ≤ 10.
    Rate,
    /// A rate > 0 (bonus attainments).
    PositiveRate,
}

impl AmountRule {
    fn describe(&self) -> &'static str {
        match self {
            AmountRule::NonNegative => "a non-negative amount",
            AmountRule::Positive => "an amount > 0",
            AmountRule::NonZero => "a non-zero amount (negative allowed)",
            AmountRule::Rate => "a rate from 0 to 10",
            AmountRule::PositiveRate => "a rate > 0 and ≤ 10",
        }
    }

    fn check(&self, d: Decimal) -> bool {
        let ten = Decimal::TEN;
        match self {
            AmountRule::NonNegative => !d.is_sign_negative(),
            AmountRule::Positive => d > Decimal::ZERO,
            AmountRule::NonZero => !d.is_zero(),
            AmountRule::Rate => d >= Decimal::ZERO && d <= ten,
            AmountRule::PositiveRate => d > Decimal::ZERO && d <= ten,
        }
    }
}

fn event_data<'a>(t: EventType, members: &'a [(Cow<'a, str>, Json<'a>)]) -> DResult<EventData> {
    let f = Fields::new(members, Path::root("data"));
    Ok(match t {
        EventType::ProgramPublished => EventData::ProgramPublished(program(&f)?),
        EventType::PartnerEnrolled => EventData::PartnerEnrolled {
            partner_id: f.identifier("partner_id")?,
            program_id: f.identifier("program_id")?,
            target: f.opt_amount("target", AmountRule::Positive)?,
        },
        EventType::PartnerWithdrawn => {
            let partner_id = f.identifier("partner_id")?;
            let program_id = f.identifier("program_id")?;
            // The shape is shared with partner.enrolled; a target here is checked but unused.
            f.opt_amount("target", AmountRule::Positive)?;
            EventData::PartnerWithdrawn {
                partner_id,
                program_id,
            }
        }
        EventType::SaleRecorded => EventData::SaleRecorded(sale(&f)?),
        EventType::SaleReturned => EventData::SaleReturned(sale_return(&f)?),
        EventType::TrainingCompleted => EventData::TrainingCompleted {
            partner_id: f.identifier("partner_id")?,
            person_id: f.identifier("person_id")?,
            course_id: f.identifier("course_id")?,
            certification: f.opt_identifier("certification")?,
        },
        EventType::ClaimSubmitted => EventData::ClaimSubmitted {
            claim_id: f.identifier("claim_id")?,
            partner_id: f.identifier("partner_id")?,
            program_id: f.identifier("program_id")?,
            amount: f.amount("amount", AmountRule::Positive)?,
            activity: f.text("activity", 200)?,
            description: f.opt_text("description", 2000)?,
        },
        EventType::ClaimDecided => EventData::ClaimDecided {
            claim_id: f.identifier("claim_id")?,
            approved: f.choice("decision", &[("approved", true), ("rejected", false)])?,
            approved_amount: f.opt_amount("approved_amount", AmountRule::NonNegative)?,
        },
        EventType::PeriodClosed => EventData::PeriodClosed {
            program_id: f.identifier("program_id")?,
            period: f.period_label("period")?,
        },
        EventType::AdjustmentPosted => EventData::AdjustmentPosted {
            adjustment_id: f.identifier("adjustment_id")?,
            partner_id: f.identifier("partner_id")?,
            program_id: f.identifier("program_id")?,
            period: f.period_label("period")?,
            amount: f.amount("amount", AmountRule::NonZero)?,
            reason: f.text("reason", 500)?,
        },
    })
}

fn identifier_list(f: &Fields<'_>, key: &str) -> DResult<Option<Vec<String>>> {
    let Some(v) = f.opt(key) else {
        return Ok(None);
    };
    let items = f.array(key, v, 0, usize::MAX)?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        out.push(f.identifier_value(&format!("{key}[{i}]"), item)?.into());
    }
    Ok(Some(out))
}

fn program(f: &Fields<'_>) -> DResult<ProgramDef> {
    let program_id = f.identifier("program_id")?;
    let version = f.integer("version", 1, u64::MAX)?;
    let name = f.text("name", 200)?;
    let kind = f.choice(
        "kind",
        &[
            ("rebate", Kind::Rebate),
            ("mdf", Kind::Mdf),
            ("coop", Kind::Coop),
            ("spif", Kind::Spif),
            ("bonus", Kind::Bonus),
            ("training", Kind::Training),
        ],
    )?;
    let currency = f.currency("currency")?;
    let start_date = f.date("start_date")?;
    let end_date = f.date("end_date")?;
    if start_date > end_date {
        return f.err(
            "end_date",
            format!("must not be before start_date ({start_date}), got {end_date}"),
        );
    }
    let period = f.choice(
        "period",
        &[
            ("month", PeriodKind::Month),
            ("quarter", PeriodKind::Quarter),
            ("year", PeriodKind::Year),
            ("program", PeriodKind::Program),
        ],
    )?;
    let requires_enrollment = f.boolean("requires_enrollment", true)?;
    let eligibility = match f.opt("eligibility") {
        None => Eligibility::default(),
        Some(v) => {
            let e = f.object("eligibility", v)?;
            e.deny_unknown(&["skus", "product_families", "regions"])?;
            Eligibility {
                skus: identifier_list(&e, "skus")?,
                product_families: identifier_list(&e, "product_families")?,
                regions: identifier_list(&e, "regions")?,
            }
        }
    };
    // SPEC §3 (v1.1): for planning and reporting only — the fold never reads it.
    let budget = f.opt_amount("budget", AmountRule::Positive)?;
    let rules_json = f.req("rules")?;
    let r = f.object("rules", rules_json)?;
    let rules = rules(&r, kind, period)?;
    Ok(ProgramDef {
        program_id: program_id.into(),
        version,
        name: name.into(),
        kind,
        currency,
        start_date,
        end_date,
        period,
        requires_enrollment,
        eligibility,
        rules,
        budget,
    })
}

fn measure(r: &Fields<'_>, key: &str) -> DResult<Measure> {
    r.choice(
        key,
        &[
            ("net_amount", Measure::NetAmount),
            ("quantity", Measure::Quantity),
        ],
    )
}

fn rules(r: &Fields<'_>, kind: Kind, period: PeriodKind) -> DResult<Rules> {
    match kind {
        Kind::Rebate => {
            r.deny_unknown(&["basis", "mode", "tiers"])?;
            let basis = measure(r, "basis")?;
            let mode = r.choice(
                "mode",
                &[
                    ("retroactive", RebateMode::Retroactive),
                    ("incremental", RebateMode::Incremental),
                ],
            )?;
            let items = r.array("tiers", r.req("tiers")?, 1, usize::MAX)?;
            // With a quantity basis, tier rates are amounts per unit without upper bound.
            let rate_rule = match basis {
                Measure::NetAmount => AmountRule::Rate,
                Measure::Quantity => AmountRule::NonNegative,
            };
            let mut tiers: Vec<Tier> = Vec::with_capacity(items.len());
            for t in r.objects("tiers", items)? {
                t.deny_unknown(&["from", "rate"])?;
                let from = t.amount("from", AmountRule::NonNegative)?;
                let rate = t.amount("rate", rate_rule)?;
                match tiers.last() {
                    None if !from.is_zero() => {
                        return t.err(
                            "from",
                            format!("the first tier must start at \"0\", got {from}"),
                        )
                    }
                    Some(prev) if from <= prev.from => {
                        return t.err(
                            "from",
                            format!(
                            "tier starts must be strictly increasing; {from} does not exceed {}",
                            prev.from
                        ),
                        )
                    }
                    _ => {}
                }
                tiers.push(Tier { from, rate });
            }
            Ok(Rules::Rebate { basis, mode, tiers })
        }
        Kind::Spif => {
            r.deny_unknown(&["per_unit", "rate", "cap_per_period", "payout"])?;
            let per_unit = r.opt_amount("per_unit", AmountRule::NonNegative)?;
            let rate = r.opt_amount("rate", AmountRule::Rate)?;
            let rate = match (per_unit, rate) {
                (Some(p), None) => SpifRate::PerUnit(p),
                (None, Some(x)) => SpifRate::Rate(x),
                (Some(_), Some(_)) => {
                    return r.err(
                        "rate",
                        "exactly one of per_unit or rate may be given, got both",
                    )
                }
                (None, None) => {
                    return r.err(
                        "per_unit",
                        "exactly one of per_unit or rate is required, got neither",
                    )
                }
            };
            Ok(Rules::Spif {
                rate,
                cap_per_period: r.opt_amount("cap_per_period", AmountRule::NonNegative)?,
                payout: r.choice(
                    "payout",
                    &[
                        ("immediate", SpifPayout::Immediate),
                        ("period_close", SpifPayout::PeriodClose),
                    ],
                )?,
            })
        }
        Kind::Bonus => {
            r.deny_unknown(&["measure", "thresholds", "accelerator"])?;
            let measure = measure(r, "measure")?;
            let items = r.array("thresholds", r.req("thresholds")?, 1, usize::MAX)?;
            let mut thresholds: Vec<Threshold> = Vec::with_capacity(items.len());
            for t in r.objects("thresholds", items)? {
                t.deny_unknown(&["attainment", "payout"])?;
                let attainment = t.amount("attainment", AmountRule::PositiveRate)?;
                let payout = t.amount("payout", AmountRule::NonNegative)?;
                if let Some(prev) = thresholds.last() {
                    if attainment <= prev.attainment {
                        return t.err(
                            "attainment",
                            format!(
                                "attainments must be strictly increasing; {attainment} does not exceed {}",
                                prev.attainment
                            ),
                        );
                    }
                }
                thresholds.push(Threshold { attainment, payout });
            }
            let accelerator = match r.opt("accelerator") {
                None => None,
                Some(v) => {
                    let a = r.object("accelerator", v)?;
                    a.deny_unknown(&["above", "rate"])?;
                    Some(Accelerator {
                        above: a.amount("above", AmountRule::Rate)?,
                        rate: a.amount("rate", AmountRule::Rate)?,
                    })
                }
            };
            Ok(Rules::Bonus {
                measure,
                thresholds,
                accelerator,
            })
        }
        Kind::Training => {
            r.deny_unknown(&["rewards", "cap_per_period"])?;
            let items = r.array("rewards", r.req("rewards")?, 1, usize::MAX)?;
            let mut rewards: Vec<Reward> = Vec::with_capacity(items.len());
            for w in r.objects("rewards", items)? {
                w.deny_unknown(&["certification", "amount"])?;
                let certification = w.identifier("certification")?;
                if rewards.iter().any(|x| x.certification == certification) {
                    return w.err(
                        "certification",
                        format!("certifications must be unique; {certification:?} appears twice"),
                    );
                }
                rewards.push(Reward {
                    certification: certification.into(),
                    amount: w.amount("amount", AmountRule::NonNegative)?,
                });
            }
            Ok(Rules::Training {
                rewards,
                cap_per_period: r.opt_amount("cap_per_period", AmountRule::NonNegative)?,
            })
        }
        Kind::Mdf | Kind::Coop => {
            r.deny_unknown(&["accrual_rate", "cap_per_period", "expires_after_periods"])?;
            let accrual_rate = r.amount("accrual_rate", AmountRule::Rate)?;
            let cap_per_period = r.opt_amount("cap_per_period", AmountRule::NonNegative)?;
            let expires_after_periods = match (r.opt("expires_after_periods"), period) {
                (None, PeriodKind::Program) => 0,
                (None, _) => 1,
                (Some(_), PeriodKind::Program) => {
                    let e = r.integer("expires_after_periods", 0, u64::MAX)?;
                    if e != 0 {
                        return r.err(
                            "expires_after_periods",
                            format!("must be 0 for a program whose period is \"program\", got {e}"),
                        );
                    }
                    0
                }
                (Some(_), _) => r.integer("expires_after_periods", 0, u64::MAX)?,
            };
            Ok(Rules::Fund {
                accrual_rate,
                cap_per_period,
                expires_after_periods,
            })
        }
    }
}

fn sale(f: &Fields<'_>) -> DResult<Sale> {
    let sale_id = f.identifier("sale_id")?;
    let partner_id = f.identifier("partner_id")?;
    let region = f.opt_identifier("region")?;
    let items = f.array("lines", f.req("lines")?, 1, 1000)?;
    let mut lines: Vec<SaleLine> = Vec::with_capacity(items.len());
    for l in f.objects("lines", items)? {
        let line_id = l.identifier("line_id")?;
        if lines.iter().any(|x| x.line_id == line_id) {
            return l.err(
                "line_id",
                format!("line ids must be unique within a sale; {line_id:?} repeats"),
            );
        }
        lines.push(SaleLine {
            line_id,
            sku: l.identifier("sku")?,
            product_family: l.opt_identifier("product_family")?,
            quantity: l.integer("quantity", 1, 1_000_000_000)?,
            net_amount: l.amount("net_amount", AmountRule::NonNegative)?,
            currency: l.currency("currency")?,
        });
    }
    Ok(Sale {
        sale_id,
        partner_id,
        region,
        lines,
    })
}

fn sale_return(f: &Fields<'_>) -> DResult<Return> {
    let return_id = f.identifier("return_id")?;
    let sale_id = f.identifier("sale_id")?;
    let partner_id = f.identifier("partner_id")?;
    let items = f.array("lines", f.req("lines")?, 1, 1000)?;
    let mut lines: Vec<ReturnLine> = Vec::with_capacity(items.len());
    for l in f.objects("lines", items)? {
        let line_id = l.identifier("line_id")?;
        if lines.iter().any(|x| x.line_id == line_id) {
            return l.err(
                "line_id",
                format!("a line may appear only once in a return; {line_id:?} repeats"),
            );
        }
        lines.push(ReturnLine {
            line_id,
            quantity: l.integer("quantity", 1, 1_000_000_000)?,
            net_amount: l.amount("net_amount", AmountRule::NonNegative)?,
        });
    }
    Ok(Return {
        return_id,
        sale_id,
        partner_id,
        lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope_with(data: &str, event_type: &str) -> String {
        format!(
            r#"{{"specversion":"1.0","id":"e1","source":"erp","type":"{event_type}","time":"2026-02-01T10:00:00Z","data":{data}}}"#
        )
    }

    fn code_of(input: &str) -> Option<Code> {
        check(input.as_bytes()).err().map(|r| r.code)
    }

    #[test]
    fn intake_order_and_codes() {
        let sale = r#"{"sale_id":"S1","partner_id":"P-1","lines":[{"line_id":"1","sku":"A","quantity":1,"net_amount":"1.00","currency":"EUR"}]}"#;
        assert_eq!(code_of(&envelope_with(sale, "sale.recorded")), None);
        assert_eq!(
            code_of(&envelope_with(sale, "sale.deleted")),
            Some(Code::UnknownType)
        );
        assert_eq!(code_of("{\"a\":"), Some(Code::MalformedJson));
        assert_eq!(code_of("[1]"), Some(Code::InvalidEnvelope));
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_INPUT_BYTES));
        assert_eq!(code_of(&big), Some(Code::TooLarge));
        // An unknown type with a bad envelope is an envelope problem first.
        let no_time = r#"{"specversion":"1.0","id":"e1","source":"erp","type":"nope","data":{}}"#;
        assert_eq!(code_of(no_time), Some(Code::InvalidEnvelope));
        // Unknown type is decided before the data shape.
        assert_eq!(
            code_of(&envelope_with("{}", "nope")),
            Some(Code::UnknownType)
        );
        assert_eq!(
            code_of(&envelope_with("{}", "sale.recorded")),
            Some(Code::InvalidData)
        );
    }

    #[test]
    fn envelope_attributes() {
        let base = |extra: &str| {
            format!(
                r#"{{"specversion":"1.0","id":"e1","source":"erp","type":"period.closed","time":"2026-02-01T10:00:00Z","data":{{"program_id":"P","period":"2026"}}{extra}}}"#
            )
        };
        assert_eq!(code_of(&base("")), None);
        assert_eq!(code_of(&base(r#","subject":null"#)), None);
        assert_eq!(code_of(&base(r#","subject":"x""#)), None);
        assert_eq!(code_of(&base(r#","x-ext":{"any":[1]}"#)), None);
        assert_eq!(
            code_of(&base(r#","datacontenttype":"application/json""#)),
            None
        );
        assert_eq!(
            code_of(&base(r#","subject":"""#)),
            Some(Code::InvalidEnvelope)
        );
        assert_eq!(
            code_of(&base(r#","datacontenttype":"text/plain""#)),
            Some(Code::InvalidEnvelope)
        );
        let id129 = base("").replace("\"e1\"", &format!("\"{}\"", "i".repeat(129)));
        assert_eq!(code_of(&id129), Some(Code::InvalidEnvelope));
        let id128 = base("").replace("\"e1\"", &format!("\"{}\"", "é".repeat(128)));
        assert_eq!(code_of(&id128), None, "lengths count scalar values");
        let num_id = base("").replace("\"e1\"", "1");
        assert_eq!(code_of(&num_id), Some(Code::InvalidEnvelope));
        let refusal = check(base(r#","subject":"""#).as_bytes()).unwrap_err();
        assert_eq!(refusal.identity, Some(("erp".into(), "e1".into())));
        assert!(refusal.message.contains("subject"), "{}", refusal.message);
    }

    #[test]
    fn data_shapes() {
        let rows: &[(&str, &str, Option<Code>)] = &[
            (
                "partner.enrolled",
                r#"{"partner_id":"P-1","program_id":"X"}"#,
                None,
            ),
            (
                "partner.enrolled",
                r#"{"partner_id":"P-1","program_id":"X","target":"0"}"#,
                Some(Code::InvalidData),
            ),
            (
                "partner.enrolled",
                r#"{"partner_id":"P-1","program_id":"X","target":null}"#,
                None,
            ),
            (
                "partner.enrolled",
                r#"{"partner_id":"P 1","program_id":"X"}"#,
                Some(Code::InvalidData),
            ),
            (
                "claim.submitted",
                r#"{"claim_id":"C","partner_id":"P","program_id":"M","amount":"0","activity":"a"}"#,
                Some(Code::InvalidData),
            ),
            (
                "claim.submitted",
                r#"{"claim_id":"C","partner_id":"P","program_id":"M","amount":"5","activity":"a","description":""}"#,
                Some(Code::InvalidData),
            ),
            (
                "claim.decided",
                r#"{"claim_id":"C","decision":"maybe"}"#,
                Some(Code::InvalidData),
            ),
            (
                "claim.decided",
                r#"{"claim_id":"C","decision":"approved","approved_amount":"0"}"#,
                None,
            ),
            (
                "period.closed",
                r#"{"program_id":"P","period":"2026-13"}"#,
                Some(Code::InvalidData),
            ),
            (
                "adjustment.posted",
                r#"{"adjustment_id":"A","partner_id":"P","program_id":"R","period":"2026-Q1","amount":"-0.01","reason":"r"}"#,
                None,
            ),
            (
                "adjustment.posted",
                r#"{"adjustment_id":"A","partner_id":"P","program_id":"R","period":"2026-Q1","amount":"0.00","reason":"r"}"#,
                Some(Code::InvalidData),
            ),
            (
                "sale.returned",
                r#"{"return_id":"R","sale_id":"S","partner_id":"P","lines":[{"line_id":"1","quantity":1}]}"#,
                Some(Code::InvalidData),
            ),
            (
                "sale.recorded",
                r#"{"sale_id":"S","partner_id":"P","lines":[{"line_id":"1","sku":"A","quantity":1.0,"net_amount":"1","currency":"EUR"}]}"#,
                Some(Code::InvalidData),
            ),
            (
                "sale.recorded",
                r#"{"sale_id":"S","partner_id":"P","lines":[{"line_id":"1","sku":"A","quantity":1000000001,"net_amount":"1","currency":"EUR"}]}"#,
                Some(Code::InvalidData),
            ),
            (
                "sale.recorded",
                r#"{"sale_id":"S","partner_id":"P","lines":[{"line_id":"1","sku":"A","quantity":1,"net_amount":"1","currency":"eur"}]}"#,
                Some(Code::InvalidData),
            ),
            (
                "training.completed",
                r#"{"partner_id":"P","person_id":"x","course_id":"c"}"#,
                None,
            ),
        ];
        for (t, data, want) in rows {
            assert_eq!(code_of(&envelope_with(data, t)), *want, "{t} {data}");
        }
    }

    #[test]
    fn program_rules_shapes() {
        let program = |kind: &str, period: &str, rules: &str, extra: &str| {
            envelope_with(
                &format!(
                    r#"{{"program_id":"X","version":1,"name":"n","kind":"{kind}","currency":"EUR","start_date":"2026-01-01","end_date":"2026-12-31","period":"{period}","rules":{rules}{extra}}}"#
                ),
                "program.published",
            )
        };
        let rows: &[(&str, &str, &str, &str, Option<Code>)] = &[
            (
                "rebate",
                "quarter",
                r#"{"basis":"net_amount","mode":"retroactive","tiers":[{"from":"0","rate":"0.02"}]}"#,
                "",
                None,
            ),
            (
                "rebate",
                "quarter",
                r#"{"basis":"net_amount","mode":"retroactive","tiers":[{"from":"1","rate":"0.02"}]}"#,
                "",
                Some(Code::InvalidData),
            ),
            (
                "rebate",
                "quarter",
                r#"{"basis":"net_amount","mode":"retroactive","tiers":[{"from":"0","rate":"0.02"},{"from":"0","rate":"0.03"}]}"#,
                "",
                Some(Code::InvalidData),
            ),
            (
                "rebate",
                "quarter",
                r#"{"basis":"net_amount","mode":"retroactive","tiers":[{"from":"0","rate":"12"}]}"#,
                "",
                Some(Code::InvalidData),
            ),
            (
                "rebate",
                "quarter",
                r#"{"basis":"quantity","mode":"retroactive","tiers":[{"from":"0","rate":"12"}]}"#,
                "",
                None,
            ),
            (
                "rebate",
                "quarter",
                r#"{"basis":"net_amount","mode":"retroactive","tiers":[]}"#,
                "",
                Some(Code::InvalidData),
            ),
            (
                "rebate",
                "quarter",
                r#"{"basis":"net_amount","mode":"retroactive","tiers":[{"from":"0","rate":"0.02","note":"x"}]}"#,
                "",
                Some(Code::InvalidData),
            ),
            (
                "rebate",
                "quarter",
                r#"{"basis":"net_amount","mode":"retroactive","tiers":[{"from":"0","rate":"0.02"}],"cap":"1"}"#,
                "",
                Some(Code::InvalidData),
            ),
            (
                "spif",
                "month",
                r#"{"per_unit":"1","rate":"0.1","payout":"immediate"}"#,
                "",
                Some(Code::InvalidData),
            ),
            (
                "spif",
                "month",
                r#"{"payout":"immediate"}"#,
                "",
                Some(Code::InvalidData),
            ),
            (
                "spif",
                "month",
                r#"{"rate":"0.1"}"#,
                "",
                Some(Code::InvalidData),
            ),
            (
                "bonus",
                "year",
                r#"{"measure":"net_amount","thresholds":[{"attainment":"0","payout":"1"}]}"#,
                "",
                Some(Code::InvalidData),
            ),
            (
                "bonus",
                "year",
                r#"{"measure":"net_amount","thresholds":[{"attainment":"1","payout":"1"}],"accelerator":{"above":"1","rate":"0.1","x":1}}"#,
                "",
                Some(Code::InvalidData),
            ),
            (
                "training",
                "year",
                r#"{"rewards":[{"certification":"A","amount":"1"},{"certification":"A","amount":"2"}]}"#,
                "",
                Some(Code::InvalidData),
            ),
            (
                "mdf",
                "program",
                r#"{"accrual_rate":"0.1","expires_after_periods":1}"#,
                "",
                Some(Code::InvalidData),
            ),
            (
                "mdf",
                "program",
                r#"{"accrual_rate":"0.1","expires_after_periods":0}"#,
                "",
                None,
            ),
            (
                "coop",
                "quarter",
                r#"{"accrual_rate":"0.1","expires_after_periods":-1}"#,
                "",
                Some(Code::InvalidData),
            ),
            (
                "mdf",
                "quarter",
                r#"{"accrual_rate":"0.1"}"#,
                r#","eligibility":{"skus":[],"colors":["red"]}"#,
                Some(Code::InvalidData),
            ),
            (
                "mdf",
                "quarter",
                r#"{"accrual_rate":"0.1"}"#,
                r#","eligibility":{"skus":[]},"unknown_top":1"#,
                None,
            ),
            (
                "mdf",
                "quarter",
                r#"{"accrual_rate":"0.1"}"#,
                r#","requires_enrollment":"yes""#,
                Some(Code::InvalidData),
            ),
        ];
        for (kind, period, rules, extra, want) in rows {
            let input = program(kind, period, rules, extra);
            let got = check(input.as_bytes()).err();
            assert_eq!(
                got.as_ref().map(|r| r.code),
                *want,
                "{kind} {rules} {extra}: {got:?}"
            );
        }
    }

    #[test]
    fn messages_name_the_field() {
        let input = envelope_with(
            r#"{"sale_id":"S","partner_id":"P","lines":[{"line_id":"1","sku":"A","quantity":0,"net_amount":"1","currency":"EUR"}]}"#,
            "sale.recorded",
        );
        let r = check(input.as_bytes()).unwrap_err();
        assert_eq!(r.code, Code::InvalidData);
        assert!(
            r.message.starts_with("data.lines[0].quantity"),
            "{}",
            r.message
        );
        assert!(r.message.contains("got 0"), "{}", r.message);
    }
}
