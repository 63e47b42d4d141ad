//! `incentive-ledger import --csv FILE --mapping MAP.toml`: a sales or returns export
//! from an ERP or a spreadsheet turned into CloudEvents.
//!
//! The mapping says which column (by header name) or constant gives each field, the
//! delimiter, the decimal separator (comma or point) and grouping separator, and the
//! date format. Rows of one sale (or return) — the same `sale_id` (`return_id`) —
//! become one event with a line per row, in row order; the event's id is
//! `sale:<sale_id>` (`return:<return_id>`), so importing the same file twice sends the
//! same events (exact duplicates). Every event is checked as intake would before
//! anything is written: one bad row and nothing is written, and every bad row is
//! listed with its line in the file and the reason — nothing is skipped silently.

use anyhow::{bail, Context, Result};
use clap::Args;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;

#[derive(Args)]
pub struct ImportArgs {
    /// The CSV file (`-` reads stdin); its first row names the columns.
    #[arg(long = "csv", value_name = "FILE")]
    pub csv: PathBuf,
    /// The mapping (TOML): event type, source, columns, separators, date format
    /// (examples/import/).
    #[arg(long, value_name = "MAP.toml")]
    pub mapping: PathBuf,
    /// Write the events here (NDJSON) instead of stdout.
    #[arg(long, conflicts_with = "send")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub send: crate::nats_cmd::SendArgs,
}

/// What a mapping file holds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// `sale.recorded` or `sale.returned`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The events' `source`: the system the export comes from.
    pub source: String,
    /// The field separator (one character; default `,`).
    #[serde(default = "comma")]
    pub delimiter: char,
    /// The decimal separator of amounts: `.` (default) or `,`.
    #[serde(default = "point")]
    pub decimal: char,
    /// A digit-grouping separator to drop from amounts (e.g. `.` in `1.234,56`).
    pub thousands: Option<char>,
    /// How `time` is written: `rfc3339` (default), or a chrono format such as
    /// `%d.%m.%Y` (a date: the business date itself, 00:00 UTC) or `%d/%m/%Y %H:%M`
    /// (a time of day, at `utc_offset`).
    #[serde(default = "rfc3339")]
    pub time_format: String,
    /// The offset of times of day written without one (default `+00:00`).
    #[serde(default = "utc")]
    pub utc_offset: String,
    /// Field → CSV column (header name).
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Field → the same value for every row (e.g. `currency = "EUR"`).
    #[serde(default)]
    pub defaults: BTreeMap<String, String>,
}

fn comma() -> char {
    ','
}
fn point() -> char {
    '.'
}
fn rfc3339() -> String {
    "rfc3339".into()
}
fn utc() -> String {
    "+00:00".into()
}

/// How each field of a kind of event is read.
#[derive(Clone, Copy, PartialEq)]
enum Field {
    /// Of the event (the same on every row of one event).
    Event,
    /// Of each line.
    Line,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Whole,
    Amount,
    Time,
}

/// The fields of one kind of event: (name, of the event or a line, value, required).
type Fields = &'static [(&'static str, Field, Kind, bool)];

const SALE: Fields = &[
    ("sale_id", Field::Event, Kind::Text, true),
    ("partner_id", Field::Event, Kind::Text, true),
    ("region", Field::Event, Kind::Text, false),
    ("time", Field::Event, Kind::Time, true),
    ("line_id", Field::Line, Kind::Text, false),
    ("sku", Field::Line, Kind::Text, true),
    ("product_family", Field::Line, Kind::Text, false),
    ("quantity", Field::Line, Kind::Whole, true),
    ("net_amount", Field::Line, Kind::Amount, true),
    ("currency", Field::Line, Kind::Text, true),
];

const RETURN: Fields = &[
    ("return_id", Field::Event, Kind::Text, true),
    ("sale_id", Field::Event, Kind::Text, true),
    ("partner_id", Field::Event, Kind::Text, true),
    ("time", Field::Event, Kind::Time, true),
    ("line_id", Field::Line, Kind::Text, false),
    ("quantity", Field::Line, Kind::Whole, true),
    ("net_amount", Field::Line, Kind::Amount, true),
];

/// Where a field's value comes from.
enum Source {
    Column(usize),
    Constant(String),
    Absent,
}

impl Mapping {
    fn fields(&self) -> Result<(Fields, &'static str, &'static str)> {
        match self.event_type.as_str() {
            "sale.recorded" => Ok((SALE, "sale_id", "sale")),
            "sale.returned" => Ok((RETURN, "return_id", "return")),
            other => {
                bail!("mapping: type {other:?}: import makes sale.recorded or sale.returned events")
            }
        }
    }
}

/// One row turned into values, with its line in the file.
struct Row {
    line: u64,
    event: Map<String, Value>,
    item: Map<String, Value>,
}

/// The events of `csv` under `mapping`, or every reason a row cannot be one (each
/// beginning with its line in the file).
pub fn convert(mapping: &Mapping, csv: &[u8]) -> Result<Result<Vec<Vec<u8>>, Vec<String>>> {
    let (fields, key, prefix) = mapping.fields()?;
    if !mapping.delimiter.is_ascii() {
        bail!("mapping: delimiter must be one ASCII character");
    }
    for name in mapping.columns.keys().chain(mapping.defaults.keys()) {
        if !fields.iter().any(|(f, ..)| f == name) {
            let known: Vec<&str> = fields.iter().map(|(f, ..)| *f).collect();
            bail!(
                "mapping: {name:?} is not a field of {} (its fields: {})",
                mapping.event_type,
                known.join(", ")
            );
        }
    }
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(mapping.delimiter as u8)
        .flexible(false)
        .from_reader(csv);
    let header: Vec<String> = reader
        .headers()
        .context("the CSV has no header row")?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let mut sources = Vec::with_capacity(fields.len());
    for (name, _, _, required) in fields {
        let source = match (mapping.columns.get(*name), mapping.defaults.get(*name)) {
            (Some(_), Some(_)) => bail!("mapping: {name} has both a column and a default"),
            (Some(column), None) => match header.iter().position(|h| h == column) {
                Some(i) => Source::Column(i),
                None => bail!(
                    "mapping: the column {column:?} ({name}) is not in the CSV's header: {}",
                    header.join(", ")
                ),
            },
            (None, Some(value)) => Source::Constant(value.clone()),
            (None, None) if *required => bail!(
                "mapping: {name} needs a column (columns.{name} = \"…\") or a value (defaults.{name} = \"…\")"
            ),
            (None, None) => Source::Absent,
        };
        sources.push(source);
    }
    let mut errors = Vec::new();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                errors.push(csv_problem(&e));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let mut row = Row {
            line,
            event: Map::new(),
            item: Map::new(),
        };
        for ((name, level, kind, required), source) in fields.iter().zip(&sources) {
            let raw = match source {
                Source::Column(i) => record.get(*i).unwrap_or_default().trim().to_string(),
                Source::Constant(v) => v.clone(),
                Source::Absent => continue,
            };
            let column = match source {
                Source::Column(i) => format!(" (column {})", header[*i]),
                _ => String::new(),
            };
            if raw.is_empty() {
                if *required {
                    errors.push(format!("line {line}: {name}{column} is empty"));
                }
                continue;
            }
            let value = match kind {
                Kind::Text => Ok(Value::String(raw.clone())),
                Kind::Whole => whole(&raw, mapping).map(|n| json!(n)),
                Kind::Amount => amount(&raw, mapping).map(Value::String),
                Kind::Time => time(&raw, mapping).map(Value::String),
            };
            match value {
                Ok(v) => {
                    let target = if *level == Field::Event {
                        &mut row.event
                    } else {
                        &mut row.item
                    };
                    target.insert((*name).to_string(), v);
                }
                Err(why) => errors.push(format!("line {line}: {name}{column} {raw:?}: {why}")),
            }
        }
        rows.push(row);
    }
    if rows.is_empty() && errors.is_empty() {
        errors.push("the CSV has no rows after its header".into());
    }
    if !errors.is_empty() {
        return Ok(Err(errors));
    }
    // Rows of one event, in the order of their first row.
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, Vec<Row>> = HashMap::new();
    for row in rows {
        let Some(Value::String(k)) = row.event.get(key).cloned() else {
            continue; // reported as empty above
        };
        if !groups.contains_key(&k) {
            order.push(k.clone());
        }
        groups.entry(k).or_default().push(row);
    }
    let mut events = Vec::with_capacity(order.len());
    for k in order {
        let rows = groups.remove(&k).unwrap_or_default();
        match event_of(mapping, prefix, &k, rows) {
            Ok(raw) => events.push(raw),
            Err(mut why) => errors.append(&mut why),
        }
    }
    if errors.is_empty() {
        Ok(Ok(events))
    } else {
        Ok(Err(errors))
    }
}

/// A row the CSV reader could not read, with its line.
fn csv_problem(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            pos: Some(pos),
            expected_len,
            len,
        } => format!(
            "line {}: {len} fields, but the header has {expected_len}",
            pos.line()
        ),
        _ => match e.position() {
            Some(pos) => format!("line {}: {e}", pos.line()),
            None => e.to_string(),
        },
    }
}

/// The event of the rows whose `sale_id` (`return_id`) is `k`, checked as intake would.
fn event_of(
    mapping: &Mapping,
    prefix: &str,
    k: &str,
    rows: Vec<Row>,
) -> Result<Vec<u8>, Vec<String>> {
    let mut errors = Vec::new();
    let first = &rows[0];
    for row in &rows[1..] {
        for (name, value) in &first.event {
            if row.event.get(name) != Some(value) {
                errors.push(format!(
                    "line {}: {name} {} differs from line {} of the same {prefix} {k} ({value})",
                    row.line,
                    row.event
                        .get(name)
                        .map_or("(empty)".to_string(), |v| v.to_string()),
                    first.line
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let lines: Vec<Value> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let mut item = row.item.clone();
            item.entry("line_id")
                .or_insert_with(|| Value::String((i + 1).to_string()));
            Value::Object(item)
        })
        .collect();
    let mut data = first.event.clone();
    let time = data.remove("time").unwrap_or(Value::Null);
    data.insert("lines".into(), Value::Array(lines));
    let id = ledger_core::ids::fitting_id(&format!("{prefix}:"), k, &mapping.source);
    let event = json!({
        "specversion": "1.0",
        "id": id,
        "source": mapping.source,
        "type": mapping.event_type,
        "time": time,
        "data": Value::Object(data),
    });
    let raw = serde_json::to_vec(&event).map_err(|e| vec![e.to_string()])?;
    if let Err(r) = ledger_core::intake::check(&raw) {
        let at: Vec<String> = rows.iter().map(|r| r.line.to_string()).collect();
        return Err(vec![format!(
            "line{} {}: the {prefix} {k} is refused by intake: {}: {}",
            if at.len() > 1 { "s" } else { "" },
            at.join(", "),
            r.code.as_str(),
            r.message
        )]);
    }
    Ok(raw)
}

/// The digits of a number's integer part: grouping separators (if the mapping has one)
/// only between groups of three digits after a first group of one to three — so that
/// `60,000.00` read with a decimal comma is refused, not taken as 60.
fn integer_digits(int: &str, m: &Mapping) -> Result<String, String> {
    let digits = match m.thousands {
        Some(t) if int.contains(t) => {
            let groups: Vec<&str> = int.split(t).collect();
            if groups[0].is_empty()
                || groups[0].len() > 3
                || groups[1..].iter().any(|g| g.len() != 3)
            {
                return Err(format!("groups its digits by {t:?} irregularly"));
            }
            groups.concat()
        }
        _ => int.to_string(),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "is not a number (decimal separator {:?}{})",
            m.decimal,
            m.thousands
                .map_or(String::new(), |t| format!(", grouping separator {t:?}"))
        ));
    }
    Ok(digits)
}

/// A whole number (a quantity).
fn whole(raw: &str, m: &Mapping) -> Result<u64, String> {
    if raw.contains(m.decimal) {
        return Err("is not a whole number".into());
    }
    integer_digits(raw, m)?
        .parse::<u64>()
        .map_err(|_| "is too large".to_string())
}

/// An amount in the contract's form (`-1234.56`): the decimal separator made a point,
/// grouping separators dropped; the digits after the separator are kept as written.
fn amount(raw: &str, m: &Mapping) -> Result<String, String> {
    let (sign, rest) = raw.strip_prefix('-').map_or(("", raw), |r| ("-", r));
    let mut parts = rest.split(m.decimal);
    let int = integer_digits(parts.next().unwrap_or_default(), m)?;
    let fraction = parts.next();
    if parts.next().is_some() {
        return Err(format!("has the decimal separator {:?} twice", m.decimal));
    }
    let text = match fraction {
        Some(f) if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(format!("has {f:?} after the decimal separator"))
        }
        Some(f) => format!("{sign}{int}.{f}"),
        None => format!("{sign}{int}"),
    };
    let d: Decimal = text.parse().map_err(|_| "is out of range".to_string())?;
    Ok(d.to_string())
}

/// A time in RFC 3339: as written (`rfc3339`), a date's 00:00 UTC, or a time of day at
/// the mapping's offset.
fn time(raw: &str, m: &Mapping) -> Result<String, String> {
    if m.time_format == "rfc3339" {
        return chrono::DateTime::parse_from_rfc3339(raw)
            .map(|_| raw.to_string())
            .map_err(|e| format!("is not an RFC 3339 time ({e}); set time_format"));
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(raw, &m.time_format) {
        let offset = if m.utc_offset == "Z" {
            "+00:00"
        } else {
            &m.utc_offset
        };
        let text = format!("{}{offset}", t.format("%Y-%m-%dT%H:%M:%S"));
        return chrono::DateTime::parse_from_rfc3339(&text)
            .map(|_| text)
            .map_err(|_| format!("utc_offset {:?} is not an offset like +01:00", m.utc_offset));
    }
    chrono::NaiveDate::parse_from_str(raw, &m.time_format)
        .map(|d| format!("{}T00:00:00Z", d.format("%Y-%m-%d")))
        .map_err(|e| format!("does not match time_format {:?} ({e})", m.time_format))
}

pub fn import(args: ImportArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.mapping)
        .with_context(|| format!("cannot read the mapping {}", args.mapping.display()))?;
    let mapping: Mapping = toml::from_str(&text)
        .with_context(|| format!("the mapping {} is not valid", args.mapping.display()))?;
    let csv = if args.csv.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("cannot read stdin")?;
        buf
    } else {
        std::fs::read(&args.csv)
            .with_context(|| format!("cannot read the CSV {}", args.csv.display()))?
    };
    let events = match convert(&mapping, &csv)? {
        Ok(events) => events,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            bail!(
                "{} row problems in {}: nothing was imported",
                errors.len(),
                args.csv.display()
            );
        }
    };
    let count = events.len();
    if args.send.send {
        return args.send.publish(events);
    }
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    for e in &events {
        out.write_all(e)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    eprintln!("{count} {} events", mapping.event_type);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> (Mapping, Vec<u8>) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/import");
        let mapping =
            toml::from_str(&std::fs::read_to_string(dir.join(format!("{name}.toml"))).unwrap())
                .unwrap();
        (
            mapping,
            std::fs::read(dir.join(format!("{name}.csv"))).unwrap(),
        )
    }

    fn events(mapping: &Mapping, csv: &str) -> Vec<serde_json::Value> {
        convert(mapping, csv.as_bytes())
            .unwrap()
            .unwrap_or_else(|e| panic!("{e:?}"))
            .iter()
            .map(|e| serde_json::from_slice(e).unwrap())
            .collect()
    }

    fn problems(mapping: &Mapping, csv: &str) -> Vec<String> {
        convert(mapping, csv.as_bytes()).unwrap().unwrap_err()
    }

    /// The examples: rows of one invoice make one sale with a line each; German
    /// numbers and dates read right; every event passes intake; the same file gives
    /// the same bytes.
    #[test]
    fn the_examples_become_the_events_they_describe() {
        let (m, csv) = example("sales");
        let text = String::from_utf8(csv).unwrap();
        let e = events(&m, &text);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0]["id"], "sale:INV-2026-0001");
        assert_eq!(e[0]["source"], "erp/sap-emea");
        assert_eq!(e[0]["time"], "2026-01-15T00:00:00Z");
        assert_eq!(e[0]["data"]["lines"].as_array().unwrap().len(), 2);
        assert_eq!(e[0]["data"]["lines"][0]["net_amount"], "60000.00");
        assert_eq!(e[0]["data"]["lines"][0]["quantity"], 10);
        assert_eq!(e[1]["data"]["lines"][0]["net_amount"], "12500.50");
        assert_eq!(
            convert(&m, text.as_bytes()).unwrap().unwrap(),
            convert(&m, text.as_bytes()).unwrap().unwrap()
        );
        let (m, csv) = example("returns");
        let e = events(&m, std::str::from_utf8(&csv).unwrap());
        assert_eq!(e[0]["id"], "return:CN-77");
        assert_eq!(e[0]["time"], "2026-03-02T09:30:00+01:00");
        assert_eq!(e[0]["data"]["lines"][0]["quantity"], 2);
    }

    /// Lines numbered per sale when the export has no line column; a time of day at
    /// the mapping's offset; constants from `defaults`.
    #[test]
    fn line_numbers_times_of_day_and_defaults() {
        let m: Mapping = toml::from_str(
            r#"
            type = "sale.recorded"
            source = "shop"
            time_format = "%d/%m/%Y %H:%M"
            utc_offset = "-05:00"
            [columns]
            sale_id = "order"
            partner_id = "reseller"
            sku = "sku"
            quantity = "qty"
            net_amount = "net"
            time = "when"
            [defaults]
            currency = "USD"
            "#,
        )
        .unwrap();
        let e = events(
            &m,
            "order,reseller,sku,qty,net,when\nO-1,R-1,A,1,1000.5,31/03/2026 22:15\nO-1,R-1,B,3,2,31/03/2026 22:15\n",
        );
        assert_eq!(e.len(), 1);
        let lines = e[0]["data"]["lines"].as_array().unwrap();
        assert_eq!(lines[0]["line_id"], "1");
        assert_eq!(lines[1]["line_id"], "2");
        assert_eq!(lines[0]["net_amount"], "1000.5");
        assert_eq!(lines[1]["currency"], "USD");
        assert_eq!(e[0]["time"], "2026-03-31T22:15:00-05:00");
    }

    /// Every bad row is named with its line and the reason; nothing is taken.
    #[test]
    fn bad_rows_are_listed_with_their_line_and_reason() {
        let (m, _) = example("sales");
        let header = "Rechnung;Pos;Partner;Material;Warengruppe;Region;Menge;Netto;Währung;Datum\n";
        let cases = [
            (
                "INV-1;1;P-1;A;f;EMEA;1,5;10,00;EUR;15.01.2026\n",
                "line 2: quantity (column Menge) \"1,5\": is not a whole number",
            ),
            (
                "INV-1;1;P-1;A;f;EMEA;1;60,000.00;EUR;15.01.2026\n",
                "net_amount (column Netto) \"60,000.00\"",
            ),
            (
                "INV-1;1;P-1;A;f;EMEA;1;1.00,0;EUR;15.01.2026\n",
                "irregularly",
            ),
            (
                "INV-1;1;P-1;A;f;EMEA;1;10,00;EUR;2026-01-15\n",
                "does not match time_format",
            ),
            (
                "INV-1;1;;A;f;EMEA;1;10,00;EUR;15.01.2026\n",
                "line 2: partner_id (column Partner) is empty",
            ),
            (
                "INV-1;1;P-1;A;f;EMEA;1;10,00;EUR;15.01.2026\nINV-1;2;P-2;B;f;EMEA;1;10,00;EUR;15.01.2026\n",
                "line 3: partner_id \"P-2\" differs from line 2 of the same sale INV-1",
            ),
            (
                "INV-1;1;P-1;A;f;EMEA;1;10,00;EUR;15.01.2026\nINV-1;1;P-1;B;f;EMEA;1;10,00;EUR;15.01.2026\n",
                "lines 2, 3: the sale INV-1 is refused by intake: invalid_data",
            ),
            (
                "INV-1;1;P-1;A;f;EMEA;1;10,00;EURO;15.01.2026\n",
                "refused by intake: invalid_data",
            ),
            (
                "INV-1;1;P-1\n",
                "line 2",
            ),
            ("", "no rows"),
        ];
        for (rows, says) in cases {
            let p = problems(&m, &format!("{header}{rows}"));
            assert!(p.iter().any(|p| p.contains(says)), "{rows:?}: {p:?}");
        }
        // Mapping mistakes are named before any row is read.
        let bad = [
            (
                "type = \"claim.submitted\"\nsource = \"s\"",
                "import makes sale.recorded or sale.returned",
            ),
            (
                "type = \"sale.recorded\"\nsource = \"s\"\n[columns]\nsale_id = \"Nope\"",
                "the column \"Nope\" (sale_id) is not in the CSV's header",
            ),
            (
                "type = \"sale.recorded\"\nsource = \"s\"\n[columns]\nprice = \"Netto\"",
                "\"price\" is not a field of sale.recorded",
            ),
            (
                "type = \"sale.recorded\"\nsource = \"s\"\n[columns]\nsale_id = \"Rechnung\"",
                "partner_id needs a column",
            ),
        ];
        for (toml_text, says) in bad {
            let m: Mapping = toml::from_str(toml_text).unwrap();
            let csv = "Rechnung,Netto\nA,1\n";
            let e = convert(&m, csv.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(says), "{toml_text}: {e}");
        }
    }
}
