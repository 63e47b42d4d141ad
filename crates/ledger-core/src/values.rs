//! The value formats of SPEC §2 — identifiers, amounts, rates, currencies, dates,
//! business times and period labels — as small pure parsers and types.
//!
//! Parsers return `None` (or a short reason) and leave the wording of refusals to
//! `intake`, which knows the field being read.

use crate::event::Text;
use chrono::{Datelike, NaiveDate};
use compact_str::format_compact;
use rust_decimal::Decimal;
use std::fmt;

/// Largest magnitude a basis may reach (SPEC §4.1: `|B| ≤ 10^15`).
pub fn basis_limit() -> Decimal {
    Decimal::from(1_000_000_000_000_000i64)
}

/// `A-Z a-z 0-9 . _ : -`, 1–64 characters.
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Number of Unicode scalar values, the unit of every length bound.
pub fn char_len(s: &str) -> usize {
    s.chars().count()
}

/// Appends one CSV record (RFC 4180: a field with a comma, quote or line break is
/// quoted, quotes doubled) and its CRLF.
pub fn push_csv_record<'a>(out: &mut String, fields: impl IntoIterator<Item = &'a str>) {
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if field.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&field.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(field);
        }
    }
    out.push_str("\r\n");
}

/// Parses the amount format `^-?(0|[1-9][0-9]{0,14})(\.[0-9]{1,6})?$`, refusing `-0`.
/// The result keeps the written number of fractional digits as its scale.
pub fn parse_amount(s: &str) -> Option<Decimal> {
    let bytes = s.as_bytes();
    let (negative, rest) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        _ => (false, bytes),
    };
    let (int_part, frac_part) = match rest.iter().position(|&b| b == b'.') {
        Some(dot) => (&rest[..dot], Some(&rest[dot + 1..])),
        None => (rest, None),
    };
    let int_ok = match int_part {
        [b'0'] => true,
        [first, tail @ ..] => {
            (b'1'..=b'9').contains(first) && tail.len() <= 14 && tail.iter().all(u8::is_ascii_digit)
        }
        [] => false,
    };
    if !int_ok {
        return None;
    }
    // 15 integer and 6 fractional digits need more than 64 bits.
    let mut mantissa: i128 = 0;
    for &d in int_part {
        mantissa = mantissa * 10 + i128::from(d - b'0');
    }
    let mut scale = 0u32;
    if let Some(frac) = frac_part {
        if frac.is_empty() || frac.len() > 6 || !frac.iter().all(u8::is_ascii_digit) {
            return None;
        }
        for &d in frac {
            mantissa = mantissa * 10 + i128::from(d - b'0');
        }
        scale = frac.len() as u32;
    }
    if negative {
        if mantissa == 0 {
            return None; // no negative zero
        }
        mantissa = -mantissa;
    }
    Some(Decimal::from_i128_with_scale(mantissa, scale))
}

/// A three-letter upper-case currency code.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(s: &str) -> Option<Currency> {
        let b = s.as_bytes();
        if b.len() == 3 && b.iter().all(u8::is_ascii_uppercase) {
            Some(Currency([b[0], b[1], b[2]]))
        } else {
            None
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// Minor units of the currency (SPEC §2).
    pub fn minor_units(&self) -> u32 {
        match self.as_str() {
            "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF"
            | "UGX" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
            "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
            _ => 2,
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Round-half-even to the currency's minor units ("round" in SPEC §2).
pub fn round_money(value: Decimal, currency: Currency) -> Decimal {
    value.round_dp_with_strategy(
        currency.minor_units(),
        rust_decimal::RoundingStrategy::MidpointNearestEven,
    )
}

/// A money amount written with exactly the currency's minor digits, never `-0`.
pub fn format_money(value: Decimal, currency: Currency) -> String {
    let mut v = round_money(value, currency);
    v.rescale(currency.minor_units());
    if v.is_zero() {
        v.set_sign_positive(true);
    }
    v.to_string()
}

/// An exact decimal without exponent, trailing fractional zeros or `-0` (the `basis`).
pub fn format_exact(value: Decimal) -> String {
    if value.is_zero() {
        return "0".to_string();
    }
    value.normalize().to_string()
}

/// An RFC 3339 time (as intake accepts it: `T`/`Z` in either case, any offset, any
/// number of fraction digits) written in UTC with `Z` and as few fraction digits as
/// say it exactly (0, 3, 6 or 9): `2026-01-01t13:11:00.5+01:00` →
/// `2026-01-01T12:11:00.500Z`. `None` if it does not parse.
pub fn normalize_time_utc(time: &str) -> Option<String> {
    let upper = time.to_ascii_uppercase();
    let parsed = chrono::DateTime::parse_from_rfc3339(&upper).ok()?;
    Some(
        parsed
            .with_timezone(&chrono::Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
    )
}

/// Parses `YYYY-MM-DD` (years 0001–9999, a real calendar day).
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    if year == 0 {
        return None;
    }
    NaiveDate::from_ymd_opt(year as i32, month, day)
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        b.iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0')),
    )
}

/// Parses an RFC 3339 `date-time` with an offset and returns its UTC calendar date,
/// which is all the fold needs of business time. `T` and `Z` may be in either case and
/// the fraction may have any number of digits. The UTC date must be within 0001–9999.
pub fn parse_time_utc_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])? as i32;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let local_date = NaiveDate::from_ymd_opt(year, month, day)?;
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset_minutes: i64 = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let oh = digits(&[*h1, *h2])?;
            let om = digits(&[*m1, *m2])?;
            if oh > 23 || om > 59 {
                return None;
            }
            let total = i64::from(oh * 60 + om);
            if *sign == b'-' {
                -total
            } else {
                total
            }
        }
        _ => return None,
    };
    let local_minutes = i64::from(hour * 60 + minute) - offset_minutes;
    let day_shift = local_minutes.div_euclid(24 * 60);
    let utc = local_date.checked_add_signed(chrono::Duration::days(day_shift))?;
    if !(1..=9999).contains(&utc.year()) {
        return None;
    }
    Some(utc)
}

/// The length of a program's periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum PeriodKind {
    Month,
    Quarter,
    Year,
    Program,
}

impl PeriodKind {
    pub fn parse(s: &str) -> Option<PeriodKind> {
        match s {
            "month" => Some(PeriodKind::Month),
            "quarter" => Some(PeriodKind::Quarter),
            "year" => Some(PeriodKind::Year),
            "program" => Some(PeriodKind::Program),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            PeriodKind::Month => "month",
            PeriodKind::Quarter => "quarter",
            PeriodKind::Year => "year",
            PeriodKind::Program => "program",
        }
    }

    /// The index of the period holding `date` (SPEC §4.2: months `year×12+month`, quarters
    /// `year×4+quarter`, years `year`, program `0`).
    pub fn index_of(&self, date: NaiveDate) -> i64 {
        let y = i64::from(date.year());
        let m = i64::from(date.month());
        match self {
            PeriodKind::Month => y * 12 + m,
            PeriodKind::Quarter => y * 4 + (m - 1) / 3 + 1,
            PeriodKind::Year => y,
            PeriodKind::Program => 0,
        }
    }

    /// The label of the period with this index.
    pub fn label(&self, index: i64) -> Text {
        match self {
            PeriodKind::Month => {
                let y = (index - 1).div_euclid(12);
                format_compact!("{:04}-{:02}", y, index - y * 12)
            }
            PeriodKind::Quarter => {
                let y = (index - 1).div_euclid(4);
                format_compact!("{:04}-Q{}", y, index - y * 4)
            }
            PeriodKind::Year => format_compact!("{index:04}"),
            PeriodKind::Program => Text::const_new("program"),
        }
    }

    /// First and last day of the period with this index; `None` for `program`, whose
    /// period is the whole program.
    pub fn date_range(&self, index: i64) -> Option<(NaiveDate, NaiveDate)> {
        let (y, first_month, months) = match self {
            PeriodKind::Month => {
                let y = (index - 1).div_euclid(12);
                (y, index - y * 12, 1)
            }
            PeriodKind::Quarter => {
                let y = (index - 1).div_euclid(4);
                (y, (index - y * 4 - 1) * 3 + 1, 3)
            }
            PeriodKind::Year => (index, 1, 12),
            PeriodKind::Program => return None,
        };
        let y = i32::try_from(y).ok()?;
        let start = NaiveDate::from_ymd_opt(y, u32::try_from(first_month).ok()?, 1)?;
        let last_month = u32::try_from(first_month + months - 1).ok()?;
        let next = if last_month == 12 {
            NaiveDate::from_ymd_opt(y + 1, 1, 1)?
        } else {
            NaiveDate::from_ymd_opt(y, last_month + 1, 1)?
        };
        Some((start, next.pred_opt()?))
    }
}

/// A syntactically valid period label (SPEC §2), before it is matched to a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeriodLabel {
    pub kind: PeriodKind,
    pub index: i64,
}

impl PeriodLabel {
    /// Parses `2026-03`, `2026-Q1`, `2026` or `program`.
    pub fn parse(s: &str) -> Option<PeriodLabel> {
        if s == "program" {
            return Some(PeriodLabel {
                kind: PeriodKind::Program,
                index: 0,
            });
        }
        let b = s.as_bytes();
        if b.len() < 4 {
            return None;
        }
        let year = i64::from(digits(&b[0..4])?);
        if year == 0 {
            return None;
        }
        match &b[4..] {
            [] => Some(PeriodLabel {
                kind: PeriodKind::Year,
                index: year,
            }),
            [b'-', b'Q', q @ b'1'..=b'4'] => Some(PeriodLabel {
                kind: PeriodKind::Quarter,
                index: year * 4 + i64::from(q - b'0'),
            }),
            [b'-', m1, m2] => {
                let m = i64::from(digits(&[*m1, *m2])?);
                if (1..=12).contains(&m) {
                    Some(PeriodLabel {
                        kind: PeriodKind::Month,
                        index: year * 12 + m,
                    })
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    pub fn label(&self) -> Text {
        self.kind.label(self.index)
    }
}

/// Serde for amounts kept in checkpoints, in binary rather than as text: one byte with
/// the sign (high bit) and the scale, then the 96-bit magnitude as a `u128` (postcard
/// writes it as a varint: 1–4 bytes for the amounts of a ledger, at most 14). Exact for
/// every `Decimal`, negative zero and trailing zeros included. Use as
/// `#[serde(with = "crate::values::bin_decimal")]` on fields of the fold's state that only
/// checkpoints encode (never JSON): formatting and parsing millions of amounts as text
/// was most of a checkpoint's encoding time, and the fixed 16 bytes of
/// `Decimal::serialize` most of a checkpoint's size.
pub mod bin_decimal {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
        let head = value.scale() as u8 | if value.is_sign_negative() { 0x80 } else { 0 };
        (head, value.mantissa().unsigned_abs()).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
        let (head, magnitude) = <(u8, u128)>::deserialize(deserializer)?;
        let scale = u32::from(head & 0x7f);
        if scale > Decimal::MAX_SCALE || magnitude >> 96 != 0 {
            return Err(serde::de::Error::custom(format!(
                "not an amount: scale {scale}, magnitude {magnitude}"
            )));
        }
        // `Decimal::serialize`'s layout (flags, lo, mid, hi; little-endian): unlike
        // `from_parts`, it keeps the sign of a zero.
        let flags = (scale << 16) | if head & 0x80 != 0 { 1 << 31 } else { 0 };
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&flags.to_le_bytes());
        bytes[4..].copy_from_slice(&magnitude.to_le_bytes()[..12]);
        Ok(Decimal::deserialize(bytes))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn times_are_normalized_to_utc_with_z() {
        for (written, utc) in [
            ("2026-01-01t13:11:00.5z", "2026-01-01T13:11:00.500Z"),
            ("2026-03-31T23:30:00-02:00", "2026-04-01T01:30:00Z"),
            ("2026-01-01T00:30:00+01:00", "2025-12-31T23:30:00Z"),
            (
                "2026-05-05T10:00:00.123456789+00:00",
                "2026-05-05T10:00:00.123456789Z",
            ),
            ("2026-05-05T10:00:00.1234Z", "2026-05-05T10:00:00.123400Z"),
            ("2026-12-31T23:59:60Z", "2026-12-31T23:59:60Z"),
        ] {
            assert_eq!(
                normalize_time_utc(written).as_deref(),
                Some(utc),
                "{written}"
            );
        }
        assert_eq!(normalize_time_utc("2026-13-01T00:00:00Z"), None);
        // Every time intake accepts normalizes.
        for line in crate::gen::Generator::new(crate::gen::GenConfig::new(4, 2000)) {
            if let Ok(e) = crate::intake::check_event(line.as_bytes()) {
                assert!(normalize_time_utc(&e.time).is_some(), "{}", e.time);
            }
        }
    }

    use super::*;

    #[test]
    fn amounts() {
        let ok = [
            ("0", "0"),
            ("12500.00", "12500.00"),
            ("-120.00", "-120.00"),
            ("999999999999999.999999", "999999999999999.999999"),
            ("0.5", "0.5"),
        ];
        for (input, shown) in ok {
            assert_eq!(
                parse_amount(input).map(|d| d.to_string()),
                Some(shown.into()),
                "{input}"
            );
        }
        let bad = [
            "",
            "-0",
            "-0.00",
            "01",
            "1.",
            ".5",
            "1.1234567",
            "1e3",
            "+1",
            " 1",
            "1000000000000000",
            "1,5",
            "--1",
            "0x10",
        ];
        for input in bad {
            assert_eq!(parse_amount(input), None, "{input}");
        }
        assert_eq!(parse_amount("10.100").map(|d| d.scale()), Some(3));
    }

    #[test]
    fn money_formatting() {
        let eur = Currency::parse("EUR").unwrap();
        let jpy = Currency::parse("JPY").unwrap();
        let kwd = Currency::parse("KWD").unwrap();
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(format_money(d("200.005"), eur), "200.00");
        assert_eq!(format_money(d("3000.045"), eur), "3000.04");
        assert_eq!(format_money(d("20000.5"), jpy), "20000");
        assert_eq!(format_money(d("1000.5"), jpy), "1000");
        assert_eq!(format_money(d("1001.5"), jpy), "1002");
        assert_eq!(format_money(d("-0.001"), eur), "0.00");
        assert_eq!(format_money(d("1"), kwd), "1.000");
        assert_eq!(format_exact(d("100001.50")), "100001.5");
        assert_eq!(format_exact(d("-0.000")), "0");
        assert_eq!(format_exact(d("125000")), "125000");
        assert_eq!(format_exact(d("1E+3")), "1000");
    }

    #[test]
    fn times() {
        let date = |s: &str| parse_time_utc_date(s).map(|d| d.to_string());
        assert_eq!(date("2026-03-31T23:30:00-02:00"), Some("2026-04-01".into()));
        assert_eq!(date("2025-12-31T23:30:00-01:00"), Some("2026-01-01".into()));
        assert_eq!(date("2026-02-10T08:00:00+09:00"), Some("2026-02-09".into()));
        assert_eq!(date("2026-03-14t10:00:00z"), Some("2026-03-14".into()));
        assert_eq!(
            date("2025-12-15t08:00:00.000000017z"),
            Some("2025-12-15".into())
        );
        assert_eq!(date("9999-12-31T23:59:59Z"), Some("9999-12-31".into()));
        for bad in [
            "2026-03-31T23:30:00",
            "2026-03-31 23:30:00Z",
            "2026-02-30T00:00:00Z",
            "2026-03-31T24:00:00Z",
            "2026-03-31T23:30:00.Z",
            "2026-03-31T23:30:00+0200",
            "0001-01-01T00:00:00+00:01",
            "9999-12-31T23:59:00-00:01",
            "2026-3-31T23:30:00Z",
            "0000-06-01T00:00:00Z",
        ] {
            assert_eq!(date(bad), None, "{bad}");
        }
    }

    #[test]
    fn period_labels_and_indexes() {
        let cases = [
            ("2026-03", PeriodKind::Month, 2026 * 12 + 3),
            ("2026-12", PeriodKind::Month, 2026 * 12 + 12),
            ("2026-Q1", PeriodKind::Quarter, 2026 * 4 + 1),
            ("2026-Q4", PeriodKind::Quarter, 2026 * 4 + 4),
            ("2026", PeriodKind::Year, 2026),
            ("program", PeriodKind::Program, 0),
        ];
        for (label, kind, index) in cases {
            let p = PeriodLabel::parse(label).unwrap();
            assert_eq!((p.kind, p.index), (kind, index), "{label}");
            assert_eq!(p.label(), label);
        }
        for bad in [
            "2026-13", "2026-00", "2026-Q5", "2026-Q0", "26", "0000", "2026-q1", "Program",
        ] {
            assert_eq!(PeriodLabel::parse(bad), None, "{bad}");
        }
        let d = NaiveDate::from_ymd_opt(2026, 12, 31).unwrap();
        assert_eq!(
            PeriodKind::Quarter.label(PeriodKind::Quarter.index_of(d)),
            "2026-Q4"
        );
        assert_eq!(
            PeriodKind::Month.label(PeriodKind::Month.index_of(d)),
            "2026-12"
        );
        let (s, e) = PeriodKind::Quarter.date_range(2026 * 4 + 1).unwrap();
        assert_eq!(
            (s.to_string(), e.to_string()),
            ("2026-01-01".into(), "2026-03-31".into())
        );
        let (s, e) = PeriodKind::Month.date_range(2024 * 12 + 2).unwrap();
        assert_eq!(
            (s.to_string(), e.to_string()),
            ("2024-02-01".into(), "2024-02-29".into())
        );
    }

    #[test]
    fn identifiers() {
        assert!(is_identifier("INV-2026-000123"));
        assert!(is_identifier("a.b_c:d-e"));
        assert!(is_identifier(&"x".repeat(64)));
        assert!(!is_identifier(&"x".repeat(65)));
        assert!(!is_identifier(""));
        assert!(!is_identifier("P 1"));
        assert!(!is_identifier("é"));
    }

    #[test]
    fn amounts_survive_the_binary_checkpoint_form() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Held(#[serde(with = "super::bin_decimal")] Decimal);
        let negative_zero = -"0.00".parse::<Decimal>().unwrap();
        assert!(negative_zero.is_sign_negative());
        let mut amounts: Vec<Decimal> = [
            "0",
            "-0.01",
            "12500.00",
            "1.10",
            "999999999999999.999999",
            "-79228162514264337593543950335",
            "79228162514264337593543950335",
            "0.0000000000000000000000000001",
        ]
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
        amounts.extend([negative_zero, Decimal::MAX, Decimal::MIN]);
        for d in amounts {
            let bytes = postcard::to_allocvec(&Held(d)).unwrap();
            assert!(bytes.len() <= 1 + 14, "{d}: {} bytes", bytes.len());
            let back: Held = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back.0, d);
            assert_eq!(
                back.0.serialize(),
                d.serialize(),
                "{d}: sign and scale kept"
            );
        }
        // A ledger's amounts are small.
        let small = postcard::to_allocvec(&Held("12500.00".parse().unwrap())).unwrap();
        assert_eq!(small.len(), 4);
        // What is not an amount is refused, not wrapped.
        let bad = postcard::to_allocvec(&(40u8, 1u128)).unwrap();
        assert!(postcard::from_bytes::<Held>(&bad).is_err());
        let bad = postcard::to_allocvec(&(2u8, 1u128 << 100)).unwrap();
        assert!(postcard::from_bytes::<Held>(&bad).is_err());
    }
}
