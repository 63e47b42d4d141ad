//! Refusal codes (SPEC §1, §3) and the refusal value that carries one.
//!
//! A refusal is an expected outcome, not an error: intake returns one for inputs that
//! never reach the log, the fold returns one for logged events it does not apply.

use std::fmt;

/// Every refusal code of the contract, in the spelling the replay document uses.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Code {
    // Intake (SPEC §1), decided before the log.
    TooLarge,
    MalformedJson,
    InvalidEnvelope,
    UnknownType,
    InvalidData,
    DuplicateConflict,
    // Business (SPEC §3), decided by the fold.
    ProgramVersionConflict,
    ProgramImmutableField,
    UnknownProgram,
    AlreadyEnrolled,
    MissingTarget,
    NotEnrolled,
    DuplicateSale,
    AmountOutOfRange,
    DuplicateReturn,
    UnknownSale,
    UnknownLine,
    ReturnExceedsSale,
    DuplicateClaim,
    WrongProgramKind,
    AmountPrecision,
    UnknownClaim,
    ClaimNotPending,
    ApprovedExceedsClaim,
    InvalidPeriod,
    PeriodAlreadyClosed,
    DuplicateAdjustment,
}

impl Code {
    pub const ALL: [Code; 27] = [
        Code::TooLarge,
        Code::MalformedJson,
        Code::InvalidEnvelope,
        Code::UnknownType,
        Code::InvalidData,
        Code::DuplicateConflict,
        Code::ProgramVersionConflict,
        Code::ProgramImmutableField,
        Code::UnknownProgram,
        Code::AlreadyEnrolled,
        Code::MissingTarget,
        Code::NotEnrolled,
        Code::DuplicateSale,
        Code::AmountOutOfRange,
        Code::DuplicateReturn,
        Code::UnknownSale,
        Code::UnknownLine,
        Code::ReturnExceedsSale,
        Code::DuplicateClaim,
        Code::WrongProgramKind,
        Code::AmountPrecision,
        Code::UnknownClaim,
        Code::ClaimNotPending,
        Code::ApprovedExceedsClaim,
        Code::InvalidPeriod,
        Code::PeriodAlreadyClosed,
        Code::DuplicateAdjustment,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Code::TooLarge => "too_large",
            Code::MalformedJson => "malformed_json",
            Code::InvalidEnvelope => "invalid_envelope",
            Code::UnknownType => "unknown_type",
            Code::InvalidData => "invalid_data",
            Code::DuplicateConflict => "duplicate_conflict",
            Code::ProgramVersionConflict => "program_version_conflict",
            Code::ProgramImmutableField => "program_immutable_field",
            Code::UnknownProgram => "unknown_program",
            Code::AlreadyEnrolled => "already_enrolled",
            Code::MissingTarget => "missing_target",
            Code::NotEnrolled => "not_enrolled",
            Code::DuplicateSale => "duplicate_sale",
            Code::AmountOutOfRange => "amount_out_of_range",
            Code::DuplicateReturn => "duplicate_return",
            Code::UnknownSale => "unknown_sale",
            Code::UnknownLine => "unknown_line",
            Code::ReturnExceedsSale => "return_exceeds_sale",
            Code::DuplicateClaim => "duplicate_claim",
            Code::WrongProgramKind => "wrong_program_kind",
            Code::AmountPrecision => "amount_precision",
            Code::UnknownClaim => "unknown_claim",
            Code::ClaimNotPending => "claim_not_pending",
            Code::ApprovedExceedsClaim => "approved_exceeds_claim",
            Code::InvalidPeriod => "invalid_period",
            Code::PeriodAlreadyClosed => "period_already_closed",
            Code::DuplicateAdjustment => "duplicate_adjustment",
        }
    }

    pub fn parse(s: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether the code is decided at intake, before the log (the input is quarantined).
    pub fn is_intake(&self) -> bool {
        matches!(
            self,
            Code::TooLarge
                | Code::MalformedJson
                | Code::InvalidEnvelope
                | Code::UnknownType
                | Code::InvalidData
                | Code::DuplicateConflict
        )
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: a machine-readable code and a message a person can act on (which field,
/// what was expected, what arrived).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: Code,
    pub message: String,
}

impl Refusal {
    pub fn new(code: Code, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Serializes a [`Code`] as its SPEC name (`invalid_period`), for documents shown to
/// people and tools (the derived form, the variant name, is the checkpoint's).
pub fn serialize_as_str<S: serde::Serializer>(code: &Code, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(code.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in Code::ALL {
            assert_eq!(Code::parse(c.as_str()), Some(c));
        }
        assert_eq!(Code::ALL.iter().filter(|c| c.is_intake()).count(), 6);
    }
}
