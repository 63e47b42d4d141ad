//! A small latency histogram rendered in the Prometheus text format (cumulative
//! buckets, `_sum`, `_count`). Recording is a few additions; it is kept under the lock
//! of whoever owns it.

use std::time::Duration;

/// Upper bounds of the buckets, in seconds.
const BOUNDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: [u64; BOUNDS.len()],
    /// Observations above the last bound.
    over: u64,
    sum_seconds: f64,
    count: u64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        match BOUNDS.iter().position(|&b| s <= b) {
            Some(i) => self.counts[i] += 1,
            None => self.over += 1,
        }
        self.sum_seconds += s;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Appends `name_bucket{labels,le=…}`, `name_sum{labels}`, `name_count{labels}`.
    /// `labels` is empty or like `route="/v1/status"`.
    pub fn render(&self, name: &str, labels: &str, out: &mut String) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, n) in BOUNDS.iter().zip(self.counts) {
            cumulative += n;
            out.push_str(&format!(
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}\n"
            ));
        }
        out.push_str(&format!(
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}\n",
            cumulative + self.over
        ));
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        out.push_str(&format!("{name}_sum{braces} {}\n", self.sum_seconds));
        out.push_str(&format!("{name}_count{braces} {}\n", self.count));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let mut out = String::new();
        h.render("x", "", &mut out);
        assert!(out.contains("x_bucket{le=\"0.0001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"2.5\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
        let mut labelled = String::new();
        h.render("y", "route=\"/a\"", &mut labelled);
        assert!(
            labelled.contains("y_bucket{route=\"/a\",le=\"+Inf\"} 3\n"),
            "{labelled}"
        );
        assert!(labelled.contains("y_count{route=\"/a\"} 3\n"), "{labelled}");
    }
}
