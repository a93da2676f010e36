//! The few Prometheus text-format lines `/metrics/resource` carries:
//! `name{label="value",...} value [timestamp_ms]`. Comments and anything
//! unparsable are skipped; a scrape is only as good as the lines it has.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

pub fn parse(text: &str) -> Vec<Line> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Line> {
    let line = line.trim();
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(body) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(body)?;
        labels = parsed;
        rest = after;
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next()?.parse().ok()?;
    let timestamp_ms = fields.next().and_then(|t| t.parse().ok());
    Some(Line { name, labels, value, timestamp_ms })
}

/// `key="value",...}` with `\"`, `\\` and `\n` escapes; returns the rest after `}`.
fn parse_labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim().to_string(), value);
        s = &after[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_values_and_timestamps() {
        let text = "# HELP x y\n# TYPE x counter\n\
            container_cpu_usage_seconds_total{container=\"app\",namespace=\"default\",pod=\"web\"} 2.5 1700000060000\n\
            node_memory_working_set_bytes 1.2e+09 1700000060000\n\
            resource_scrape_error 0\n\
            odd{a=\"q\\\"uote\"} 1\n\
            broken{a=\"x\" \n";
        let lines = parse(text);
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(lines[0].name, "container_cpu_usage_seconds_total");
        assert_eq!(lines[0].labels["pod"], "web");
        assert_eq!(lines[0].value, 2.5);
        assert_eq!(lines[0].timestamp_ms, Some(1_700_000_060_000));
        assert_eq!(lines[1].value, 1.2e9);
        assert_eq!(lines[2].timestamp_ms, None);
        assert_eq!(lines[3].labels["a"], "q\"uote");
    }
}
