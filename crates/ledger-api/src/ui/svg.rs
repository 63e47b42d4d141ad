//! Small charts drawn on the server as inline SVG: a progress bar to the next tier or
//! threshold, and earned against paid per period. No script, no external asset; each
//! chart carries a text alternative, and the numbers are in the page's tables too.

use maud::{html, Markup};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

/// A bar `done / total` full (clamped to 0–1), with `label` as its accessible name.
pub(crate) fn progress(done: Decimal, total: Decimal, label: &str) -> Markup {
    let fraction = if total > Decimal::ZERO {
        (done / total).to_f64().unwrap_or(0.0).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let width = (fraction * 300.0).round();
    html! {
        svg.progress viewBox="0 0 300 14" width="100%" height="14" role="img" aria-label=(label) {
            title { (label) }
            rect.track x="0" y="0" width="300" height="14" rx="7" {}
            rect.fill x="0" y="0" width=(width) height="14" rx="7" {}
        }
    }
}

/// One period's earned and paid amounts.
pub(crate) struct PeriodBar {
    pub period: String,
    pub earned: Decimal,
    pub paid: Decimal,
}

/// Earned (dark) and paid (light) side by side per period, on one scale.
pub(crate) fn earned_and_paid(bars: &[PeriodBar], currency: &str) -> Markup {
    let max = bars
        .iter()
        .flat_map(|b| [b.earned, b.paid])
        .fold(Decimal::ZERO, Decimal::max);
    let height = 80.0;
    let slot = 48.0;
    let width = (bars.len() as f64 * slot).max(slot);
    let scale = |v: Decimal| {
        if max > Decimal::ZERO {
            ((v / max).to_f64().unwrap_or(0.0).max(0.0) * height).round()
        } else {
            0.0
        }
    };
    let label = bars
        .iter()
        .map(|b| {
            format!(
                "{}: earned {} {currency}, paid {} {currency}",
                b.period, b.earned, b.paid
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    html! {
        svg.chart viewBox=(format!("0 0 {width} {}", height + 16.0)) width=(width) height=(height + 16.0) role="img" aria-label=(label) {
            title { (label) }
            @for (i, b) in bars.iter().enumerate() {
                @let x = i as f64 * slot;
                @let e = scale(b.earned);
                @let p = scale(b.paid);
                rect.earned x=(x + 6.0) y=(height - e) width="16" height=(e) {}
                rect.paid x=(x + 24.0) y=(height - p) width="16" height=(p) {}
                text x=(x + 23.0) y=(height + 12.0) text-anchor="middle" { (b.period) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn bars_are_scaled_and_labelled() {
        let half = progress(dec("50"), dec("100"), "half way").into_string();
        assert!(half.contains(r#"width="150""#), "{half}");
        assert!(half.contains("half way"));
        let over = progress(dec("150"), dec("100"), "over").into_string();
        assert!(
            over.contains(r#"class="fill" x="0" y="0" width="300""#),
            "{over}"
        );
        let none = progress(dec("1"), dec("0"), "no total").into_string();
        assert!(
            none.contains(r#"class="fill" x="0" y="0" width="0""#),
            "{none}"
        );
        let chart = earned_and_paid(
            &[
                PeriodBar {
                    period: "2026-Q1".into(),
                    earned: dec("100"),
                    paid: dec("50"),
                },
                PeriodBar {
                    period: "2026-Q2".into(),
                    earned: dec("0"),
                    paid: dec("0"),
                },
            ],
            "EUR",
        )
        .into_string();
        assert!(
            chart.contains("2026-Q1: earned 100 EUR, paid 50 EUR"),
            "{chart}"
        );
        assert!(
            chart.contains(r#"height="80""#) && chart.contains(r#"height="40""#),
            "{chart}"
        );
    }
}
