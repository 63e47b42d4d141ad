//! Reading a `data` object field by field: paths for messages, the typed readers
//! (identifiers, texts, amounts, dates, choices) and the rules amounts obey. Every
//! refusal names the field and what arrived.

use super::*;

/// A shape violation inside `data`: where, and what was wrong.
#[derive(Debug)]
pub(super) struct DataError {
    pub(super) path: String,
    pub(super) problem: String,
}

pub(super) type DResult<T> = Result<T, DataError>;

/// Where an object sits inside the event (`data.rules.tiers[2]`), kept as its segments
/// and rendered only when a message needs it: checking a valid event builds no strings.
#[derive(Clone, Copy)]
pub(super) struct Path {
    pub(super) segments: [(&'static str, Option<usize>); Path::DEPTH],
    pub(super) len: usize,
}

impl Path {
    /// Deeper than any object in an event's `data` (`data.rules.accelerator`).
    const DEPTH: usize = 6;

    pub(super) fn root(name: &'static str) -> Path {
        let mut segments = [("", None); Path::DEPTH];
        segments[0] = (name, None);
        Path { segments, len: 1 }
    }

    pub(super) fn child(&self, key: &'static str, index: Option<usize>) -> Path {
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
pub(super) struct Fields<'a> {
    pub(super) members: &'a [(Cow<'a, str>, Json<'a>)],
    pub(super) path: Path,
}

impl<'a> Fields<'a> {
    pub(super) fn new(members: &'a [(Cow<'a, str>, Json<'a>)], path: Path) -> Fields<'a> {
        Fields { members, path }
    }

    pub(super) fn path_of(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    pub(super) fn err<T>(&self, key: &str, problem: impl Into<String>) -> DResult<T> {
        Err(DataError {
            path: self.path_of(key),
            problem: problem.into(),
        })
    }

    pub(super) fn opt(&self, key: &str) -> Option<&'a Json<'a>> {
        present(self.members.iter().find(|(k, _)| k == key).map(|(_, v)| v))
    }

    pub(super) fn req(&self, key: &str) -> DResult<&'a Json<'a>> {
        match self.opt(key) {
            Some(v) => Ok(v),
            None => self.err(key, "is required but missing"),
        }
    }

    /// Refuses keys outside `allowed` (used inside `eligibility` and `rules`).
    pub(super) fn deny_unknown(&self, allowed: &[&str]) -> DResult<()> {
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

    pub(super) fn string_value(
        &self,
        key: &str,
        v: &'a Json<'a>,
        expected: &str,
    ) -> DResult<&'a str> {
        match v {
            Json::Str(s) => Ok(s),
            other => self.err(key, format!("expected {expected}, got {}", show(other))),
        }
    }

    pub(super) fn identifier_value(&self, key: &str, v: &'a Json<'a>) -> DResult<Text> {
        const WHAT: &str = "an identifier (1–64 characters of A-Z a-z 0-9 . _ : -)";
        let s = self.string_value(key, v, WHAT)?;
        if is_identifier(s) {
            Ok(Text::from(s))
        } else {
            self.err(key, format!("expected {WHAT}, got {}", show(v)))
        }
    }

    pub(super) fn identifier(&self, key: &str) -> DResult<Text> {
        let v = self.req(key)?;
        self.identifier_value(key, v)
    }

    pub(super) fn opt_identifier(&self, key: &str) -> DResult<Option<Text>> {
        self.opt(key)
            .map(|v| self.identifier_value(key, v))
            .transpose()
    }

    pub(super) fn text_value(&self, key: &str, v: &'a Json<'a>, max: usize) -> DResult<Text> {
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

    pub(super) fn text(&self, key: &str, max: usize) -> DResult<Text> {
        let v = self.req(key)?;
        self.text_value(key, v, max)
    }

    pub(super) fn opt_text(&self, key: &str, max: usize) -> DResult<Option<Text>> {
        self.opt(key)
            .map(|v| self.text_value(key, v, max))
            .transpose()
    }

    pub(super) fn amount_value(
        &self,
        key: &str,
        v: &'a Json<'a>,
        rule: AmountRule,
    ) -> DResult<Decimal> {
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

    pub(super) fn amount(&self, key: &str, rule: AmountRule) -> DResult<Decimal> {
        let v = self.req(key)?;
        self.amount_value(key, v, rule)
    }

    pub(super) fn opt_amount(&self, key: &str, rule: AmountRule) -> DResult<Option<Decimal>> {
        self.opt(key)
            .map(|v| self.amount_value(key, v, rule))
            .transpose()
    }

    /// A JSON integer literal (no fraction, no exponent) within `min..=max`; larger
    /// literals saturate at `u64::MAX` when `max` is `u64::MAX`.
    pub(super) fn integer(&self, key: &str, min: u64, max: u64) -> DResult<u64> {
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

    pub(super) fn boolean(&self, key: &str, default: bool) -> DResult<bool> {
        match self.opt(key) {
            None => Ok(default),
            Some(Json::Bool(b)) => Ok(*b),
            Some(other) => self.err(key, format!("expected true or false, got {}", show(other))),
        }
    }

    pub(super) fn date(&self, key: &str) -> DResult<chrono::NaiveDate> {
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

    pub(super) fn currency(&self, key: &str) -> DResult<Currency> {
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

    pub(super) fn period_label(&self, key: &str) -> DResult<PeriodLabel> {
        let v = self.req(key)?;
        const WHAT: &str = "a period label (\"2026-03\", \"2026-Q1\", \"2026\" or \"program\")";
        let s = self.string_value(key, v, WHAT)?;
        match PeriodLabel::parse(s) {
            Some(p) => Ok(p),
            None => self.err(key, format!("expected {WHAT}, got {}", show(v))),
        }
    }

    pub(super) fn choice<T>(&self, key: &str, options: &[(&str, T)]) -> DResult<T>
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

    pub(super) fn object(&self, key: &'static str, v: &'a Json<'a>) -> DResult<Fields<'a>> {
        match v {
            Json::Obj(members) => Ok(Fields::new(members, self.path.child(key, None))),
            other => self.err(key, format!("expected an object, got {}", show(other))),
        }
    }

    pub(super) fn array(
        &self,
        key: &str,
        v: &'a Json<'a>,
        min: usize,
        max: usize,
    ) -> DResult<&'a [Json<'a>]> {
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
    pub(super) fn objects(
        &self,
        key: &'static str,
        items: &'a [Json<'a>],
    ) -> DResult<Vec<Fields<'a>>> {
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
pub(super) enum AmountRule {
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
    pub(super) fn describe(&self) -> &'static str {
        match self {
            AmountRule::NonNegative => "a non-negative amount",
            AmountRule::Positive => "an amount > 0",
            AmountRule::NonZero => "a non-zero amount (negative allowed)",
            AmountRule::Rate => "a rate from 0 to 10",
            AmountRule::PositiveRate => "a rate > 0 and ≤ 10",
        }
    }

    pub(super) fn check(&self, d: Decimal) -> bool {
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
