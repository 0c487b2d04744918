//! The metrics table: one row per generated set, one column per metric, with the settings
//! that produced every number — as JSON (for scripts) and Markdown (in the layout of the
//! paper's tables: CSD↑, CMMD↓, KID↓, FID↓).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A metric of the paper.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Contrastive Style Descriptor similarity to the real images (higher is better).
    Csd,
    /// CLIP maximum mean discrepancy (lower is better).
    Cmmd,
    /// Kernel Inception Distance (lower is better).
    Kid,
    /// Fréchet Inception Distance (lower is better).
    Fid,
}

impl Metric {
    pub const ALL: [Metric; 4] = [Metric::Csd, Metric::Cmmd, Metric::Kid, Metric::Fid];

    pub fn name(&self) -> &'static str {
        match self {
            Metric::Csd => "csd",
            Metric::Cmmd => "cmmd",
            Metric::Kid => "kid",
            Metric::Fid => "fid",
        }
    }

    /// Column header with the direction of "better".
    pub fn header(&self) -> &'static str {
        match self {
            Metric::Csd => "CSD ↑",
            Metric::Cmmd => "CMMD ↓",
            Metric::Kid => "KID ↓",
            Metric::Fid => "FID ↓",
        }
    }

    pub fn parse(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == s)
    }
}

/// One number with its spread, where the metric has one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricValue {
    pub value: f64,
    /// KID: the standard deviation over subsets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<f64>,
    /// Bootstrap confidence interval `[low, high]`, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci: Option<[f64; 2]>,
}

/// A set of images and how many of them were evaluated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetInfo {
    pub name: String,
    pub images: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub set: String,
    pub images: usize,
    pub values: BTreeMap<Metric, MetricValue>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsTable {
    pub real: SetInfo,
    pub metrics: Vec<Metric>,
    pub rows: Vec<Row>,
    /// Per metric: the network, weights digest, preprocessing and estimator settings.
    pub settings: BTreeMap<Metric, serde_json::Value>,
    /// Notices about the estimates (e.g. a reduced KID subset size).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl MetricsTable {
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("table serialises");
        v.push(b'\n');
        v
    }

    /// The table in the layout of the paper's tables, then the settings.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Metrics against `{}` ({} real images).\n",
            self.real.name, self.real.images
        );
        s.push_str("| Method | Images |");
        for m in &self.metrics {
            let _ = write!(s, " {} |", m.header());
        }
        s.push_str("\n|---|---:|");
        for _ in &self.metrics {
            s.push_str("---:|");
        }
        s.push('\n');
        for r in &self.rows {
            let _ = write!(s, "| {} | {} |", r.set, r.images);
            for m in &self.metrics {
                let cell = r.values.get(m).map(|v| cell(*m, v)).unwrap_or_default();
                let _ = write!(s, " {cell} |");
            }
            s.push('\n');
        }
        s.push_str("\nSettings:\n");
        for (m, v) in &self.settings {
            let _ = writeln!(s, "- {}: {}", m.header(), settings_line(v));
        }
        for n in &self.notes {
            let _ = writeln!(s, "- Note: {n}");
        }
        s
    }
}

fn cell(m: Metric, v: &MetricValue) -> String {
    let digits = match m {
        Metric::Csd | Metric::Cmmd => 4,
        Metric::Kid => 5,
        Metric::Fid => 2,
    };
    let mut c = format!("{:.*}", digits, v.value);
    if let Some(sd) = v.std {
        let _ = write!(c, " ± {sd:.digits$}");
    }
    if let Some([lo, hi]) = v.ci {
        let _ = write!(c, " [{lo:.digits$}, {hi:.digits$}]");
    }
    c
}

fn settings_line(v: &serde_json::Value) -> String {
    match v.as_object() {
        Some(o) => o
            .iter()
            .map(|(k, v)| match v.as_str() {
                Some(s) => format!("{k} = {s}"),
                None => format!("{k} = {v}"),
            })
            .collect::<Vec<_>>()
            .join("; "),
        None => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_has_one_row_per_set_in_the_papers_column_order() {
        let t = MetricsTable {
            real: SetInfo {
                name: "test_images".into(),
                images: 3,
            },
            metrics: Metric::ALL.to_vec(),
            rows: vec![Row {
                set: "nsync".into(),
                images: 3,
                values: BTreeMap::from([
                    (
                        Metric::Fid,
                        MetricValue {
                            value: 123.456,
                            std: None,
                            ci: Some([100.0, 150.0]),
                        },
                    ),
                    (
                        Metric::Kid,
                        MetricValue {
                            value: 0.01234,
                            std: Some(0.001),
                            ci: None,
                        },
                    ),
                ]),
            }],
            settings: BTreeMap::from([(Metric::Fid, serde_json::json!({"network": "inception"}))]),
            notes: vec!["KID subset size reduced".into()],
        };
        let md = t.to_markdown();
        assert!(
            md.contains("| Method | Images | CSD ↑ | CMMD ↓ | KID ↓ | FID ↓ |"),
            "{md}"
        );
        assert!(
            md.contains("| nsync | 3 |  |  | 0.01234 ± 0.00100 | 123.46 [100.00, 150.00] |"),
            "{md}"
        );
        assert!(md.contains("- FID ↓: network = inception"), "{md}");
        let back: MetricsTable = serde_json::from_slice(&t.to_json()).unwrap();
        assert_eq!(back, t);
    }
}
