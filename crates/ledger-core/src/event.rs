//! Typed inbound events (SPEC §3), as the fold consumes them.
//!
//! Values here have passed every shape check of SPEC §1–§2; `intake` is the only place
//! that builds them from JSON. Business checks (refusals with codes like `unknown_sale`)
//! are the fold's job, not this module's.

use crate::rules::{Kind, Rules};
use crate::values::{Currency, PeriodKind, PeriodLabel};
use chrono::NaiveDate;
use rust_decimal::Decimal;

/// Text taken from an event (ids, names, free text). Values of up to 24 bytes — nearly
/// every id — are kept inline, so reading an event allocates only for its long texts:
/// intake and replay build millions of these.
pub type Text = compact_str::CompactString;

/// The inbound event types of SPEC §3.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum EventType {
    ProgramPublished,
    PartnerEnrolled,
    PartnerWithdrawn,
    SaleRecorded,
    SaleReturned,
    TrainingCompleted,
    ClaimSubmitted,
    ClaimDecided,
    PeriodClosed,
    AdjustmentPosted,
}

impl EventType {
    pub const ALL: [EventType; 10] = [
        EventType::ProgramPublished,
        EventType::PartnerEnrolled,
        EventType::PartnerWithdrawn,
        EventType::SaleRecorded,
        EventType::SaleReturned,
        EventType::TrainingCompleted,
        EventType::ClaimSubmitted,
        EventType::ClaimDecided,
        EventType::PeriodClosed,
        EventType::AdjustmentPosted,
    ];

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            EventType::ProgramPublished => "program.published",
            EventType::PartnerEnrolled => "partner.enrolled",
            EventType::PartnerWithdrawn => "partner.withdrawn",
            EventType::SaleRecorded => "sale.recorded",
            EventType::SaleReturned => "sale.returned",
            EventType::TrainingCompleted => "training.completed",
            EventType::ClaimSubmitted => "claim.submitted",
            EventType::ClaimDecided => "claim.decided",
            EventType::PeriodClosed => "period.closed",
            EventType::AdjustmentPosted => "adjustment.posted",
        }
    }
}

/// One accepted event: its identity, business date and typed data.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub source: Text,
    pub id: Text,
    /// The CloudEvents `time` as written.
    pub time: Text,
    /// The UTC calendar date of `time` (SPEC §1 "Business time").
    pub date: NaiveDate,
    pub data: EventData,
}

impl Event {
    pub fn event_type(&self) -> EventType {
        match &self.data {
            EventData::ProgramPublished(_) => EventType::ProgramPublished,
            EventData::PartnerEnrolled { .. } => EventType::PartnerEnrolled,
            EventData::PartnerWithdrawn { .. } => EventType::PartnerWithdrawn,
            EventData::SaleRecorded(_) => EventType::SaleRecorded,
            EventData::SaleReturned(_) => EventType::SaleReturned,
            EventData::TrainingCompleted { .. } => EventType::TrainingCompleted,
            EventData::ClaimSubmitted { .. } => EventType::ClaimSubmitted,
            EventData::ClaimDecided { .. } => EventType::ClaimDecided,
            EventData::PeriodClosed { .. } => EventType::PeriodClosed,
            EventData::AdjustmentPosted { .. } => EventType::AdjustmentPosted,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventData {
    ProgramPublished(ProgramDef),
    PartnerEnrolled {
        partner_id: Text,
        program_id: Text,
        target: Option<Decimal>,
    },
    PartnerWithdrawn {
        partner_id: Text,
        program_id: Text,
    },
    SaleRecorded(Sale),
    SaleReturned(Return),
    TrainingCompleted {
        partner_id: Text,
        person_id: Text,
        course_id: Text,
        certification: Option<Text>,
    },
    ClaimSubmitted {
        claim_id: Text,
        partner_id: Text,
        program_id: Text,
        amount: Decimal,
        activity: Text,
        description: Option<Text>,
    },
    ClaimDecided {
        claim_id: Text,
        approved: bool,
        approved_amount: Option<Decimal>,
    },
    PeriodClosed {
        program_id: Text,
        period: PeriodLabel,
    },
    AdjustmentPosted {
        adjustment_id: Text,
        partner_id: Text,
        program_id: Text,
        period: PeriodLabel,
        amount: Decimal,
        reason: Text,
    },
}

/// One version of a program, as published.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProgramDef {
    pub program_id: String,
    pub version: u64,
    pub name: String,
    pub kind: Kind,
    pub currency: Currency,
    pub start_date: NaiveDate,
    pub end_date: NaiveDate,
    pub period: PeriodKind,
    pub requires_enrollment: bool,
    pub eligibility: Eligibility,
    pub rules: Rules,
    /// What the program is planned to cost, in its currency (SPEC §3, v1.1): for
    /// planning and reporting only; the fold never reads it.
    pub budget: Option<rust_decimal::Decimal>,
}

/// Optional lists that a sale line must match, combined with AND.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Eligibility {
    pub skus: Option<Vec<String>>,
    pub product_families: Option<Vec<String>>,
    pub regions: Option<Vec<String>>,
}

impl Eligibility {
    /// A present list must contain the value; a missing value matches no list.
    pub fn matches(&self, sku: &str, product_family: Option<&str>, region: Option<&str>) -> bool {
        fn ok(list: &Option<Vec<String>>, value: Option<&str>) -> bool {
            match list {
                None => true,
                Some(items) => value.is_some_and(|v| items.iter().any(|i| i == v)),
            }
        }
        ok(&self.skus, Some(sku))
            && ok(&self.product_families, product_family)
            && ok(&self.regions, region)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sale {
    pub sale_id: Text,
    pub partner_id: Text,
    pub region: Option<Text>,
    pub lines: Vec<SaleLine>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SaleLine {
    pub line_id: Text,
    pub sku: Text,
    pub product_family: Option<Text>,
    pub quantity: u64,
    pub net_amount: Decimal,
    pub currency: Currency,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Return {
    pub return_id: Text,
    pub sale_id: Text,
    pub partner_id: Text,
    pub lines: Vec<ReturnLine>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReturnLine {
    pub line_id: Text,
    pub quantity: u64,
    pub net_amount: Decimal,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eligibility_lists_combine_with_and() {
        let e = Eligibility {
            skus: None,
            product_families: Some(vec!["switches".into()]),
            regions: Some(vec!["EMEA".into()]),
        };
        assert!(e.matches("SKU-1", Some("switches"), Some("EMEA")));
        assert!(!e.matches("SKU-1", Some("firewalls"), Some("EMEA")));
        assert!(!e.matches("SKU-1", Some("switches"), None));
        let empty = Eligibility {
            skus: Some(vec![]),
            ..Eligibility::default()
        };
        assert!(!empty.matches("SKU-1", None, None));
        assert!(Eligibility::default().matches("X", None, None));
    }

    #[test]
    fn event_type_names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("payout.issued"), None);
    }
}
