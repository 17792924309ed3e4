//! A minimal Prometheus text-format writer (exposition format 0.0.4). Our metrics are a few
//! counters and gauges read from atomics and the store at scrape time, so a registry crate
//! would add machinery without adding anything we use.

use std::fmt::Write as _;

/// Builds one `/metrics` response.
#[derive(Debug, Default)]
pub struct MetricsText {
    text: String,
}

/// Prometheus metric types we emit.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
}

impl MetricsText {
    pub fn new() -> MetricsText {
        MetricsText::default()
    }

    /// Writes `# HELP`, `# TYPE` and one sample per label set. Counter names end in `_total`.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind, samples: &[(&[(&str, &str)], f64)]) -> &mut Self {
        let kind_text = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind_text}");
        for (labels, value) in samples {
            self.text.push_str(name);
            if !labels.is_empty() {
                self.text.push('{');
                for (label_idx, (label, label_value)) in labels.iter().enumerate() {
                    if label_idx > 0 {
                        self.text.push(',');
                    }
                    let _ = write!(self.text, "{label}=\"{}\"", escape_label(label_value));
                }
                self.text.push('}');
            }
            let _ = writeln!(self.text, " {value}");
        }
        self
    }

    /// A single unlabelled sample.
    pub fn single(&mut self, name: &str, help: &str, kind: Kind, value: f64) -> &mut Self {
        self.family(name, help, kind, &[(&[], value)])
    }

    pub fn finish(self) -> String {
        self.text
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_with_escaped_labels() {
        let mut metrics = MetricsText::new();
        metrics.single("hie_up", "1 when up", Kind::Gauge, 1.0).family(
            "hie_acks_total",
            "ACKs sent",
            Kind::Counter,
            &[(&[("code", "A\"A")], 3.0)],
        );
        assert_eq!(
            metrics.finish(),
            "# HELP hie_up 1 when up\n# TYPE hie_up gauge\nhie_up 1\n\
             # HELP hie_acks_total ACKs sent\n# TYPE hie_acks_total counter\nhie_acks_total{code=\"A\\\"A\"} 3\n"
        );
    }
}
