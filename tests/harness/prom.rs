//! A strict parser of the Prometheus text exposition format (0.0.4) and of OpenMetrics text
//! (what `prometheus-client` writes: `# EOF`, `# UNIT`), for checking `/metrics` and Envoy's
//! `/stats/prometheus`. Anything it does not understand is an error, with the line number.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// `# TYPE` per metric family.
    pub types: BTreeMap<String, String>,
}

impl Exposition {
    /// The sample named `name` whose labels include every pair of `labels`; an error when
    /// there is none or more than one.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
        let found: Vec<&Sample> = self.matching(name, labels).collect();
        match found.as_slice() {
            [one] => Ok(one.value),
            [] => anyhow::bail!("no sample {name}{labels:?}"),
            many => anyhow::bail!("{} samples match {name}{labels:?}: {many:?}", many.len()),
        }
    }

    /// Like [`Exposition::get`], 0 when absent (counters Envoy has not created yet).
    pub fn get_or_zero(&self, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
        if self.matching(name, labels).next().is_none() {
            return Ok(0.0);
        }
        self.get(name, labels)
    }

    /// The sum over every sample named `name` with those labels.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        })
    }
}

fn is_name(s: &str, colons: bool) -> bool {
    let mut chars = s.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':');
    chars.next().is_some_and(ok_first)
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':'))
}

fn value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Parses a whole exposition.
pub fn parse(text: &str) -> anyhow::Result<Exposition> {
    let mut out = Exposition::default();
    let mut eof = false;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let fail = |why: &str| anyhow::anyhow!("line {n}: {why}: {line:?}");
        if eof {
            return Err(fail("content after # EOF"));
        }
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            match parts.next() {
                Some("EOF") => eof = true,
                Some("TYPE") => {
                    let name = parts.next().ok_or_else(|| fail("TYPE without a name"))?;
                    let kind = parts.next().ok_or_else(|| fail("TYPE without a type"))?;
                    let known = [
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "untyped",
                        "unknown",
                        "info",
                        "stateset",
                        "gaugehistogram",
                    ];
                    if !is_name(name, true) || !known.contains(&kind) {
                        return Err(fail("bad TYPE"));
                    }
                    if out.types.insert(name.to_owned(), kind.to_owned()).is_some() {
                        return Err(fail("second TYPE for a family"));
                    }
                }
                Some("HELP") | Some("UNIT") => {
                    let name = parts
                        .next()
                        .ok_or_else(|| fail("HELP/UNIT without a name"))?;
                    if !is_name(name, true) {
                        return Err(fail("bad metric name"));
                    }
                }
                // Plain comments are allowed by the 0.0.4 format.
                _ => {}
            }
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => return Err(fail("no value")),
        };
        if !is_name(name, true) {
            return Err(fail("bad metric name"));
        }
        let mut labels = BTreeMap::new();
        let rest = if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            let end;
            loop {
                // label name
                let start = chars
                    .peek()
                    .map(|(i, _)| *i)
                    .ok_or_else(|| fail("unclosed {"))?;
                if body[start..].starts_with('}') {
                    end = start + 1;
                    break;
                }
                let eq = body[start..]
                    .find('=')
                    .ok_or_else(|| fail("label without ="))?
                    + start;
                let key = &body[start..eq];
                if !is_name(key, false) {
                    return Err(fail("bad label name"));
                }
                while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                    chars.next();
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(fail("label value not quoted"));
                }
                let mut v = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => v.push('\\'),
                            Some((_, '"')) => v.push('"'),
                            Some((_, 'n')) => v.push('\n'),
                            _ => return Err(fail("bad escape")),
                        },
                        Some((_, '"')) => break,
                        Some((_, c)) => v.push(c),
                        None => return Err(fail("unterminated label value")),
                    }
                }
                if labels.insert(key.to_owned(), v).is_some() {
                    return Err(fail("duplicate label"));
                }
                match chars.next() {
                    Some((_, ',')) => {
                        // A trailing comma before `}` is allowed.
                        if chars.peek().is_some_and(|(_, c)| *c == '}') {
                            end = chars.next().map(|(i, _)| i + 1).unwrap_or(0);
                            break;
                        }
                    }
                    Some((i, '}')) => {
                        end = i + 1;
                        break;
                    }
                    _ => return Err(fail("expected , or }")),
                }
            }
            &body[end..]
        } else {
            rest
        };
        let mut fields = rest.split_whitespace();
        let v = fields
            .next()
            .and_then(value)
            .ok_or_else(|| fail("bad value"))?;
        if let Some(ts) = fields.next()
            && ts.parse::<f64>().is_err()
        {
            return Err(fail("bad timestamp"));
        }
        if fields.next().is_some() || !rest.starts_with(' ') {
            return Err(fail("unexpected text"));
        }
        out.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value: v,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_formats_strictly() {
        let text = "# HELP a_total Things.\n# TYPE a_total counter\na_total{route=\"r\\\"1\",result=\"ok\"} 3\nb 1.5e3 1700000000\n# EOF\n";
        let e = parse(text).expect("valid");
        assert_eq!(e.get("a_total", &[("route", "r\"1")]).expect("one"), 3.0);
        assert_eq!(e.get("b", &[]).expect("one"), 1500.0);
        assert_eq!(e.types["a_total"], "counter");
        for bad in [
            "a{x=1} 1",
            "a{x=\"1\" 1",
            "1a 1",
            "a one",
            "a 1 2 3",
            "a{x=\"1\",x=\"2\"} 1",
            "# EOF\na 1",
            "# TYPE a nonsense",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
