//! A seeded generator of event streams in the mix of real feeds (and of the public
//! `random_seed*` fixtures): programs of every kind and their new versions, enrollments,
//! sales with several lines, returns, training, claims and decisions, closes,
//! adjustments — plus mistakes (malformed lines, bad data, unknown types, business
//! refusals), exact re-sends, conflicting re-sends and late arrivals.
//!
//! Used by property tests, benchmarks and load tests. Deterministic: the same seed gives
//! the same lines on every machine (its PRNG is SplitMix64, written here so that the
//! stream never changes with a dependency's version).

/// SplitMix64: tiny, fast, and fixed forever.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent / 100`.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The shape of a generated stream.
#[derive(Debug, Clone, Copy)]
pub struct GenConfig {
    pub seed: u64,
    /// Number of lines to produce.
    pub events: usize,
    pub partners: usize,
}

impl GenConfig {
    pub fn new(seed: u64, events: usize) -> GenConfig {
        GenConfig {
            seed,
            events,
            partners: 40,
        }
    }
}

const SKUS: [&str; 6] = ["SW-24", "RT-500", "FW-10", "AP-6", "LIC-SEC", "SRV-2"];
const FAMILIES: [&str; 4] = ["switches", "routers", "firewalls", "licenses"];
const REGIONS: [&str; 3] = ["EMEA", "AMER", "APAC"];
const CERTS: [&str; 5] = [
    "CERT-NET",
    "CERT-SEC",
    "CERT-CLOUD",
    "CERT-WLAN",
    "CERT-OLD",
];

#[derive(Debug, Clone)]
struct GenProgram {
    id: String,
    kind: &'static str,
    currency: &'static str,
    period: &'static str,
    version: u64,
    requires_enrollment: bool,
    /// Rules variant chosen at creation, kept so new versions stay compatible.
    variant: u64,
    /// Next period index (month 1..=12, quarter 1..=4, year 1) to close.
    next_close: u32,
}

#[derive(Debug, Clone)]
struct GenSale {
    sale_id: String,
    partner: usize,
    lines: Vec<(u64, u64)>, // (quantity, net cents)
    returned: Vec<u64>,
}

/// An iterator of NDJSON lines (without line endings).
#[derive(Debug, Clone)]
pub struct Generator {
    rng: Rng,
    cfg: GenConfig,
    produced: usize,
    programs: Vec<GenProgram>,
    sales: Vec<GenSale>,
    sale_seq: u64,
    return_seq: u64,
    claims: Vec<String>,
    claim_seq: u64,
    adjustment_seq: u64,
    event_seq: u64,
    recent: Vec<String>,
    pending: Option<String>,
    /// (partner, program index) pairs currently enrolled.
    enrolled: std::collections::BTreeSet<(usize, usize)>,
    /// Claims submitted and not yet decided.
    open_claims: Vec<String>,
}

impl Generator {
    pub fn new(cfg: GenConfig) -> Generator {
        let mut rng = Rng::new(cfg.seed);
        let kinds: [(&str, &str); 8] = [
            ("rebate", "quarter"),
            ("rebate", "month"),
            ("spif", "month"),
            ("spif", "quarter"),
            ("bonus", "year"),
            ("training", "quarter"),
            ("mdf", "quarter"),
            ("coop", "year"),
        ];
        let currencies = ["EUR", "USD", "JPY"];
        let mut programs = Vec::new();
        for (i, (kind, period)) in kinds.iter().enumerate() {
            for copy in 0..2 {
                let currency = if copy == 0 {
                    "EUR"
                } else {
                    *rng.pick(&currencies)
                };
                programs.push(GenProgram {
                    id: format!("{}-{}", kind.to_uppercase(), i * 2 + copy),
                    kind,
                    currency,
                    period,
                    version: 0,
                    requires_enrollment: rng.chance(60) || *kind == "bonus",
                    variant: rng.below(2),
                    next_close: 1,
                });
            }
        }
        Generator {
            rng,
            cfg,
            produced: 0,
            programs,
            sales: Vec::new(),
            sale_seq: 0,
            return_seq: 0,
            claims: Vec::new(),
            claim_seq: 0,
            adjustment_seq: 0,
            event_seq: 0,
            recent: Vec::new(),
            pending: None,
            enrolled: std::collections::BTreeSet::new(),
            open_claims: Vec::new(),
        }
    }

    /// Day of 2026 (0..365) that the stream has reached.
    fn today(&self) -> u32 {
        ((self.produced as u64 * 365) / (self.cfg.events.max(1) as u64)).min(364) as u32
    }

    fn time_of_day(&mut self, day: u32) -> String {
        let (m, d) = month_day(day);
        let h = self.rng.below(24);
        let mi = self.rng.below(60);
        match self.rng.below(10) {
            0 => format!("2026-{m:02}-{d:02}T{h:02}:{mi:02}:00+02:00"),
            1 => format!("2026-{m:02}-{d:02}t{h:02}:{mi:02}:00.5z"),
            _ => format!("2026-{m:02}-{d:02}T{h:02}:{mi:02}:00Z"),
        }
    }

    /// Business time: usually today, sometimes a late arrival from weeks ago.
    fn business_time(&mut self) -> String {
        let today = self.today();
        let day = if self.rng.chance(8) {
            today.saturating_sub(self.rng.below(60) as u32 + 20)
        } else {
            today
        };
        self.time_of_day(day)
    }

    fn envelope(&mut self, source: &str, ty: &str, time: &str, data: &str) -> String {
        self.event_seq += 1;
        format!(
            r#"{{"specversion":"1.0","id":"{source}-{:07}","source":"{source}","type":"{ty}","time":"{time}","data":{data}}}"#,
            self.event_seq
        )
    }

    fn partner(&mut self) -> usize {
        self.rng.below(self.cfg.partners as u64) as usize
    }

    fn amount(&mut self, max_units: u64, currency: &str) -> String {
        let units = 1 + self.rng.below(max_units);
        if currency == "JPY" {
            format!("{}", units * 100)
        } else {
            format!("{units}.{:02}", self.rng.below(100))
        }
    }

    fn rules(&mut self, p: &GenProgram) -> String {
        let v = p.version;
        match (p.kind, p.variant) {
            ("rebate", 0) => format!(
                r#"{{"basis":"net_amount","mode":"retroactive","tiers":[{{"from":"0","rate":"0.0{}"}},{{"from":"20000","rate":"0.03"}},{{"from":"80000","rate":"0.045"}}]}}"#,
                1 + v % 3
            ),
            ("rebate", _) => format!(
                r#"{{"basis":"quantity","mode":"incremental","tiers":[{{"from":"0","rate":"1.{}0"}},{{"from":"100","rate":"2.25"}}]}}"#,
                v % 10
            ),
            ("spif", 0) => format!(
                r#"{{"per_unit":"{}.50","cap_per_period":"900.00","payout":"{}"}}"#,
                4 + v,
                if v % 2 == 1 {
                    "immediate"
                } else {
                    "period_close"
                }
            ),
            ("spif", _) => format!(r#"{{"rate":"0.01{}","payout":"immediate"}}"#, v % 10),
            ("bonus", _) => format!(
                r#"{{"measure":"net_amount","thresholds":[{{"attainment":"0.8","payout":"{}00.00"}},{{"attainment":"1.2","payout":"5000.00"}}],"accelerator":{{"above":"1.0","rate":"0.0{}"}}}}"#,
                10 + v,
                1 + v % 5
            ),
            ("training", _) => format!(
                r#"{{"rewards":[{{"certification":"CERT-NET","amount":"{}0.00"}},{{"certification":"CERT-SEC","amount":"75.00"}},{{"certification":"CERT-CLOUD","amount":"40.00"}}],"cap_per_period":"400.00"}}"#,
                10 + v
            ),
            _ => format!(
                r#"{{"accrual_rate":"0.0{}","cap_per_period":"5000.00","expires_after_periods":1}}"#,
                3 + v % 4
            ),
        }
    }

    fn publish(&mut self, index: usize, bad: bool) -> String {
        let mut p = self.programs[index].clone();
        p.version += 1;
        let mut version = p.version;
        let mut currency = p.currency;
        if bad {
            if self.rng.chance(50) {
                version += 1; // program_version_conflict
            } else {
                currency = if currency == "EUR" { "USD" } else { "EUR" }; // immutable field
            }
        } else {
            self.programs[index].version = p.version;
        }
        let rules = self.rules(&p);
        let eligibility = if p.kind == "rebate" && p.variant == 0 {
            r#","eligibility":{"product_families":["switches","routers","firewalls"]}"#
        } else {
            ""
        };
        let data = format!(
            r#"{{"program_id":"{}","version":{version},"name":"{} program v{version}","kind":"{}","currency":"{currency}","start_date":"2026-01-01","end_date":"2026-12-31","period":"{}","requires_enrollment":{}{eligibility},"rules":{rules}}}"#,
            p.id, p.kind, p.kind, p.period, p.requires_enrollment
        );
        let time = self.time_of_day(self.today());
        self.envelope("admin/program-office", "program.published", &time, &data)
    }

    fn sale(&mut self) -> String {
        let partner = self.partner();
        self.sale_seq += 1;
        let sale_id = format!("INV-{:08}", self.sale_seq);
        let n_lines = 1 + self.rng.below(3);
        let currency = *self.rng.pick(&["EUR", "EUR", "USD", "JPY"]);
        let mut lines = Vec::new();
        let mut json_lines = Vec::new();
        for l in 0..n_lines {
            let quantity = 1 + self.rng.below(40);
            let cents = if currency == "JPY" {
                (1 + self.rng.below(900)) * 10_000
            } else {
                100 + self.rng.below(2_000_000)
            };
            let net = if currency == "JPY" {
                format!("{}", cents / 100)
            } else {
                format!("{}.{:02}", cents / 100, cents % 100)
            };
            let family = if self.rng.chance(80) {
                format!(r#","product_family":"{}""#, self.rng.pick(&FAMILIES))
            } else {
                String::new()
            };
            json_lines.push(format!(
                r#"{{"line_id":"{}","sku":"{}"{family},"quantity":{quantity},"net_amount":"{net}","currency":"{currency}"}}"#,
                l + 1,
                self.rng.pick(&SKUS)
            ));
            lines.push((quantity, cents));
        }
        let region = if self.rng.chance(90) {
            format!(r#""region":"{}","#, self.rng.pick(&REGIONS))
        } else {
            String::new()
        };
        // A few sales reuse an earlier sale_id (duplicate_sale).
        let shown_id = if self.rng.chance(1) && self.sale_seq > 2 {
            format!("INV-{:08}", self.sale_seq - 1)
        } else {
            sale_id.clone()
        };
        let data = format!(
            r#"{{"sale_id":"{shown_id}","partner_id":"P-{partner:03}",{region}"lines":[{}]}}"#,
            json_lines.join(",")
        );
        if shown_id == sale_id {
            let returned = vec![0; lines.len()];
            self.sales.push(GenSale {
                sale_id,
                partner,
                lines,
                returned,
            });
            if self.sales.len() > 2000 {
                let drop = self.rng.below(1000) as usize;
                self.sales.swap_remove(drop);
            }
        }
        let time = self.business_time();
        self.envelope("erp/sap-emea", "sale.recorded", &time, &data)
    }

    fn sale_return(&mut self) -> String {
        self.return_seq += 1;
        let return_id = format!("CN-{:07}", self.return_seq);
        if self.sales.is_empty() || self.rng.chance(5) {
            let data = format!(
                r#"{{"return_id":"{return_id}","sale_id":"INV-NOPE","partner_id":"P-000","lines":[{{"line_id":"1","quantity":1,"net_amount":"1.00"}}]}}"#
            );
            let time = self.business_time();
            return self.envelope("erp/sap-emea", "sale.returned", &time, &data);
        }
        let i = self.rng.below(self.sales.len() as u64) as usize;
        let exceed = self.rng.chance(8);
        let sale = &mut self.sales[i];
        let l = (sale.sale_id.len() + sale.lines.len() + return_id.len()) % sale.lines.len();
        let (quantity, cents) = sale.lines[l];
        let left = quantity - sale.returned[l];
        let q = if exceed || left == 0 {
            left + 1
        } else {
            1 + (quantity % left.max(1)).min(left - 1)
        };
        if !exceed && left > 0 {
            sale.returned[l] += q;
        }
        let part = cents * q.min(quantity) / quantity / (if exceed { 1 } else { 2 });
        let net = format!("{}.{:02}", part / 100, part % 100);
        let data = format!(
            r#"{{"return_id":"{return_id}","sale_id":"{}","partner_id":"P-{:03}","lines":[{{"line_id":"{}","quantity":{q},"net_amount":"{net}"}}]}}"#,
            sale.sale_id,
            sale.partner,
            l + 1
        );
        let time = self.time_of_day(self.today());
        self.envelope("erp/sap-emea", "sale.returned", &time, &data)
    }

    /// Long by design: one arm per kind of line the generator writes, each a few lines; a
    /// table of the mix.
    fn next_line(&mut self) -> String {
        // Publish every program first, then enroll a few partners.
        if let Some(i) = self.programs.iter().position(|p| p.version == 0) {
            return self.publish(i, false);
        }
        let roll = self.rng.below(1000);
        match roll {
            0..=459 => self.sale(),
            460..=549 => self.sale_return(),
            550..=649 => {
                let partner = self.partner();
                let cert = *self.rng.pick(&CERTS);
                let cert = if self.rng.chance(5) {
                    String::new()
                } else {
                    format!(r#","certification":"{cert}""#)
                };
                let data = format!(
                    r#"{{"partner_id":"P-{partner:03}","person_id":"rep-{}","course_id":"C-{}"{cert}}}"#,
                    self.rng.below(30),
                    self.rng.below(9)
                );
                let time = self.business_time();
                self.envelope("lms/academy", "training.completed", &time, &data)
            }
            650..=739 => {
                // Mostly new enrollments; sometimes a partner already enrolled (a mistake).
                let mut partner = self.partner();
                let mut p = self.rng.below(self.programs.len() as u64) as usize;
                for _ in 0..8 {
                    if !self.enrolled.contains(&(partner, p)) {
                        break;
                    }
                    partner = self.partner();
                    p = self.rng.below(self.programs.len() as u64) as usize;
                }
                if self.enrolled.contains(&(partner, p)) && self.rng.chance(70) {
                    // Everybody is enrolled here: withdraw instead, so that churn goes on.
                    self.enrolled.remove(&(partner, p));
                    let id = self.programs[p].id.clone();
                    let data = format!(r#"{{"partner_id":"P-{partner:03}","program_id":"{id}"}}"#);
                    let time = self.time_of_day(self.today());
                    return self.envelope("crm/salesforce", "partner.withdrawn", &time, &data);
                }
                self.enrolled.insert((partner, p));
                let program = self.programs[p].clone();
                let target =
                    if program.kind == "bonus" && self.rng.chance(95) || self.rng.chance(20) {
                        format!(r#","target":"{}""#, self.amount(90_000, program.currency))
                    } else {
                        String::new()
                    };
                let data = format!(
                    r#"{{"partner_id":"P-{partner:03}","program_id":"{}"{target}}}"#,
                    program.id
                );
                let time = self.time_of_day(self.today());
                self.envelope("crm/salesforce", "partner.enrolled", &time, &data)
            }
            740..=749 => {
                let partner = self.partner();
                let p = self.rng.below(self.programs.len() as u64) as usize;
                self.enrolled.remove(&(partner, p));
                let id = self.programs[p].id.clone();
                let data = format!(r#"{{"partner_id":"P-{partner:03}","program_id":"{id}"}}"#);
                let time = self.time_of_day(self.today());
                self.envelope("crm/salesforce", "partner.withdrawn", &time, &data)
            }
            750..=839 => {
                let partner = self.partner();
                self.claim_seq += 1;
                let claim_id = format!("CLM-{:07}", self.claim_seq);
                let funds: Vec<usize> = (0..self.programs.len())
                    .filter(|&i| {
                        matches!(self.programs[i].kind, "mdf" | "coop") || self.rng.chance(1)
                    })
                    .collect();
                let p = self.programs[*self.rng.pick(&funds)].clone();
                let amount = if self.rng.chance(4) && p.currency != "JPY" {
                    "10.505".to_string()
                } else {
                    self.amount(600, p.currency)
                };
                let data = format!(
                    r#"{{"claim_id":"{claim_id}","partner_id":"P-{partner:03}","program_id":"{}","amount":"{amount}","activity":"trade show"}}"#,
                    p.id
                );
                self.claims.push(claim_id.clone());
                self.open_claims.push(claim_id);
                let time = self.time_of_day(self.today());
                self.envelope("portal/claims", "claim.submitted", &time, &data)
            }
            840..=894 => {
                let claim = if self.claims.is_empty() || self.rng.chance(3) {
                    "CLM-UNKNOWN".to_string()
                } else if self.open_claims.is_empty() || self.rng.chance(4) {
                    // A decision on an already decided claim.
                    let i = self.claims.len()
                        - 1
                        - self.rng.below(self.claims.len().min(20) as u64) as usize;
                    self.claims[i].clone()
                } else {
                    let i = self.rng.below(self.open_claims.len() as u64) as usize;
                    self.open_claims.swap_remove(i)
                };
                let data = match self.rng.below(4) {
                    0 => format!(r#"{{"claim_id":"{claim}","decision":"rejected"}}"#),
                    1 => format!(
                        r#"{{"claim_id":"{claim}","decision":"approved","approved_amount":"{}.00"}}"#,
                        self.rng.below(300)
                    ),
                    _ => format!(r#"{{"claim_id":"{claim}","decision":"approved"}}"#),
                };
                let time = self.time_of_day(self.today());
                self.envelope("portal/claims", "claim.decided", &time, &data)
            }
            895..=929 => {
                self.adjustment_seq += 1;
                let partner = self.partner();
                let p = self.rng.pick(&self.programs).clone();
                let (m, _) = month_day(self.today());
                let period = match p.period {
                    "month" => format!("2026-{m:02}"),
                    "quarter" => format!("2026-Q{}", (m - 1) / 3 + 1),
                    _ => "2026".to_string(),
                };
                let sign = if self.rng.chance(30) { "-" } else { "" };
                let amount = self.amount(200, p.currency);
                let data = format!(
                    r#"{{"adjustment_id":"ADJ-{:06}","partner_id":"P-{partner:03}","program_id":"{}","period":"{period}","amount":"{sign}{amount}","reason":"manual correction"}}"#,
                    self.adjustment_seq, p.id,
                );
                let time = self.time_of_day(self.today());
                self.envelope("finance/ops", "adjustment.posted", &time, &data)
            }
            930..=944 => {
                let i = self.rng.below(self.programs.len() as u64) as usize;
                let bad = self.rng.chance(15);
                self.publish(i, bad)
            }
            945..=979 => self.close(),
            980..=989 => {
                // An exact re-send of a recent line (JetStream redelivery, retries).
                match self.recent.last() {
                    Some(line) => line.clone(),
                    None => self.sale(),
                }
            }
            990..=993 => {
                // A conflicting re-send: same identity, other content.
                match self.recent.last() {
                    Some(line) if line.contains("\"data\":{") => {
                        line.replacen("\"data\":{", "\"data\":{\"note\":\"edited\",", 1)
                    }
                    _ => self.sale(),
                }
            }
            _ => self.mistake(),
        }
    }

    fn close(&mut self) -> String {
        let today = self.today();
        let (month, _) = month_day(today);
        let i = self.rng.below(self.programs.len() as u64) as usize;
        let p = self.programs[i].clone();
        let (label, ended) = match p.period {
            "month" => (format!("2026-{:02}", p.next_close), p.next_close < month),
            "quarter" => (format!("2026-Q{}", p.next_close), p.next_close * 3 < month),
            _ => ("2026".to_string(), today >= 360),
        };
        if !ended && !self.rng.chance(3) {
            return self.sale(); // nothing is due for closing yet
        }
        let label = if !ended || self.rng.chance(5) {
            // Too early to close the next one: re-close a closed one, or a bad label.
            if p.next_close > 1 && self.rng.chance(50) {
                match p.period {
                    "month" => format!("2026-{:02}", p.next_close - 1),
                    "quarter" => format!("2026-Q{}", p.next_close - 1),
                    _ => "2026".to_string(),
                }
            } else {
                "2027-Q1".to_string()
            }
        } else {
            self.programs[i].next_close += 1;
            label
        };
        let data = format!(r#"{{"program_id":"{}","period":"{label}"}}"#, p.id);
        let time = self.time_of_day(today);
        self.envelope("finance/close", "period.closed", &time, &data)
    }

    fn mistake(&mut self) -> String {
        let time = self.time_of_day(self.today());
        match self.rng.below(5) {
            0 => r#"{"specversion":"1.0","id":"broken","source":"erp/sap-emea","type":"sale.recorded","data":{"#.to_string(),
            1 => self.envelope(
                "erp/sap-emea",
                "sale.recorded",
                &time,
                r#"{"sale_id":"INV-BAD","partner_id":"P-001","lines":[{"line_id":"1","sku":"SW-24","quantity":0,"net_amount":"1.00","currency":"EUR"}]}"#,
            ),
            2 => self.envelope("erp/sap-emea", "sale.deleted", &time, r#"{"sale_id":"INV-1"}"#),
            3 => format!(
                r#"{{"specversion":"0.3","id":"old-{}","source":"erp/legacy","type":"sale.recorded","time":"{time}","data":{{}}}}"#,
                self.produced
            ),
            _ => self.envelope(
                "crm/salesforce",
                "partner.enrolled",
                &time,
                r#"{"partner_id":"P-001","program_id":"NOPE"}"#,
            ),
        }
    }
}

impl Iterator for Generator {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if self.produced >= self.cfg.events {
            return None;
        }
        let line = match self.pending.take() {
            Some(l) => l,
            None => self.next_line(),
        };
        self.produced += 1;
        if self.recent.len() >= 16 {
            self.recent.remove(0);
        }
        self.recent.push(line.clone());
        Some(line)
    }
}

/// Month (1..=12) and day of month of a day of 2026 (0-based).
fn month_day(day: u32) -> (u32, u32) {
    const DAYS: [u32; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut d = day.min(364);
    for (i, len) in DAYS.iter().enumerate() {
        if d < *len {
            return (i as u32 + 1, d + 1);
        }
        d -= len;
    }
    (12, 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::Replay;

    #[test]
    fn same_seed_same_stream() {
        let a: Vec<String> = Generator::new(GenConfig::new(7, 500)).collect();
        let b: Vec<String> = Generator::new(GenConfig::new(7, 500)).collect();
        let c: Vec<String> = Generator::new(GenConfig::new(8, 500)).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 500);
    }

    #[test]
    fn stream_has_the_fixture_mix() {
        let mut replay = Replay::new();
        for (i, line) in Generator::new(GenConfig::new(3, 5000)).enumerate() {
            replay.push(line.as_bytes(), i as u64 + 1);
        }
        let doc = replay.document();
        let c = doc.events;
        assert!(c.duplicates > 10, "{c:?}");
        assert!(c.rejected > 100, "{c:?}");
        assert!(c.applied > 3500, "{c:?}");
        let reasons: std::collections::BTreeSet<&str> =
            doc.payouts.iter().map(|p| p.reason.as_str()).collect();
        for r in ["accrual", "settlement", "claim", "true_up"] {
            assert!(reasons.contains(r), "no {r} payout in {reasons:?}");
        }
        let codes: std::collections::BTreeSet<&str> =
            doc.rejected.iter().map(|r| r.code.as_str()).collect();
        for code in [
            "malformed_json",
            "invalid_data",
            "unknown_type",
            "duplicate_conflict",
            "return_exceeds_sale",
            "claim_not_pending",
            "period_already_closed",
            "invalid_period",
            "program_version_conflict",
            "program_immutable_field",
        ] {
            assert!(codes.contains(code), "no {code} in {codes:?}");
        }
        assert!(doc.balances.iter().any(|b| b.expired_bucket == Some(true)));
        assert!(doc.claims.iter().any(|c| c.status == "approved"));
    }
}
