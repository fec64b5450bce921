//! The Prometheus text exposition format, parsed for assertions: samples with their labels,
//! and the `# TYPE` of each family (so histogram `_bucket`/`_sum`/`_count` series group under
//! their family). A malformed line panics, naming it: in a test that is a failure to report.

use std::collections::{BTreeMap, BTreeSet};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition (`GET /metrics`).
#[derive(Debug, Clone)]
pub struct Scrape {
    /// The text as scraped, for failure messages.
    pub text: String,
    pub samples: Vec<Sample>,
    /// Family name → type, from the `# TYPE` lines.
    pub families: BTreeMap<String, String>,
}

/// Parses one sample line: `name{a="x",b="y"} value` (label values may hold escaped quotes).
pub fn parse_sample(line: &str) -> Sample {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("sample line without a value: {line}"));
    let name = line[..name_end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let mut end = None;
        loop {
            // label name
            let mut key = String::new();
            for (i, c) in chars.by_ref() {
                match c {
                    '=' => break,
                    '}' => {
                        end = Some(i);
                        break;
                    }
                    ',' => {}
                    _ => key.push(c),
                }
            }
            if end.is_some() {
                break;
            }
            assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "in {line}");
            let mut value = String::new();
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(other) => value.push(other),
                        None => panic!("dangling escape in {line}"),
                    },
                    '"' => break,
                    _ => value.push(c),
                }
            }
            labels.insert(key, value);
            match chars.next() {
                Some((_, ',')) => {
                    if let Some(&(i, '}')) = chars.peek() {
                        end = Some(i);
                        break;
                    }
                }
                Some((i, '}')) => {
                    end = Some(i);
                    break;
                }
                other => panic!("unexpected {other:?} in {line}"),
            }
        }
        rest = &body[end.expect("closing brace") + 1..];
    }
    let value = rest.trim().split(' ').next().unwrap_or("");
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .unwrap_or_else(|e| panic!("bad value {v:?} ({e}) in {line}")),
    };
    Sample {
        name,
        labels,
        value,
    }
}

impl Scrape {
    /// Parses the text format; a malformed line panics (a failed test), naming the line.
    pub fn parse(text: String) -> Self {
        let mut samples = Vec::new();
        let mut families = BTreeMap::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let mut parts = t.split_whitespace();
                let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                    panic!("bad TYPE line: {line}");
                };
                families.insert(name.to_string(), kind.to_string());
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                samples.push(parse_sample(line));
            }
        }
        Scrape {
            text,
            samples,
            families,
        }
    }

    /// Sum of the samples named `name` carrying all of `labels`; 0 when there is none.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.samples.iter().any(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// Distinct label sets per family, ignoring histogram buckets (`le`) and the
    /// `_bucket`/`_sum`/`_count` split: the number of time series a dashboard can group by.
    pub fn label_sets(&self) -> BTreeSet<(String, BTreeMap<String, String>)> {
        self.samples
            .iter()
            .map(|s| {
                let mut labels = s.labels.clone();
                labels.remove("le");
                (self.family_of(&s.name).to_string(), labels)
            })
            .collect()
    }

    /// The family a sample name belongs to (`x_bucket` → `x` for a histogram `x`).
    pub fn family_of<'a>(&self, name: &'a str) -> &'a str {
        if self.families.contains_key(name) {
            return name;
        }
        for suffix in ["_bucket", "_count", "_sum"] {
            if let Some(base) = name.strip_suffix(suffix)
                && matches!(
                    self.families.get(base).map(String::as_str),
                    Some("histogram" | "summary")
                )
            {
                return base;
            }
        }
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_labels_escapes_and_histogram_families() {
        let text = "# TYPE http_requests_total counter\n\
                    http_requests_total{method=\"GET\",path=\"/a\\\"b\"} 3\n\
                    http_requests_total{method=\"POST\",} 2\n\
                    # TYPE latency histogram\n\
                    latency_bucket{le=\"+Inf\"} 5\n\
                    latency_count 5\n";
        let m = Scrape::parse(text.to_string());
        assert_eq!(m.get("http_requests_total", &[]), 5.0);
        assert_eq!(m.get("http_requests_total", &[("path", "/a\"b")]), 3.0);
        assert!(m.has("http_requests_total", &[("method", "POST")]));
        assert_eq!(m.family_of("latency_bucket"), "latency");
        assert_eq!(m.label_sets().len(), 3);
    }
}
