//! Field selectors: `f=v`, `f==v`, `f!=v`, comma-separated, with `\`
//! escaping `\`, `,` and `=` inside values.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldOp {
    /// `=` or `==`.
    Eq,
    /// `!=`.
    NotEq,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub op: FieldOp,
    /// Unescaped.
    pub value: String,
}

/// Requirements that must all hold; none selects everything.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

/// Splits on commas that are not escaped; escapes stay in the terms.
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let (mut start, mut escaped) = (0, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// The field, operator and raw value at the first operator in the term; the
/// field part has no escaping.
fn split_term(term: &str) -> Option<(&str, FieldOp, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, kind) in [("!=", FieldOp::NotEq), ("==", FieldOp::Eq), ("=", FieldOp::Eq)] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], kind, value));
            }
        }
    }
    None
}

/// Resolves `\\`, `\,` and `\=`; any other escape, or a bare `,` or `=`, is
/// an error worded as upstream's (which prints the bad character's code).
pub fn unescape_value(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(format!("invalid field selector: invalid escape sequence: \\{c}"));
            }
            out.push(c);
            escaped = false;
        } else {
            match c {
                '\\' => escaped = true,
                ',' | '=' => return Err(format!("invalid field selector: unescaped character in value: {}", c as u32)),
                c => out.push(c),
            }
        }
    }
    if escaped {
        return Err("invalid field selector: invalid escape sequence: \\".into());
    }
    Ok(out)
}

/// Escapes a literal value for use in a field selector.
pub fn escape_value(s: &str) -> String {
    s.replace('\\', "\\\\").replace(',', "\\,").replace('=', "\\=")
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<FieldSelector, String> {
        let mut terms = split_terms(s);
        terms.sort();
        let mut requirements = Vec::new();
        for term in terms.into_iter().filter(|t| !t.is_empty()) {
            let (field, op, raw) =
                split_term(term).ok_or_else(|| format!("invalid selector: '{s}'; can't understand '{term}'"))?;
            let value = unescape_value(raw)?;
            // A bare "=" selects everything, as upstream drops it.
            if field.is_empty() && value.is_empty() {
                continue;
            }
            requirements.push(FieldRequirement { field: field.to_string(), op, value });
        }
        Ok(FieldSelector { requirements })
    }

    /// Selects everything.
    pub fn everything() -> FieldSelector {
        FieldSelector::default()
    }

    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// `get` returns a field's value as text (missing counts as "").
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| {
            let have = get(&r.field).unwrap_or_default();
            match r.op {
                FieldOp::Eq => have == r.value,
                FieldOp::NotEq => have != r.value,
            }
        })
    }

    /// The value a field must equal, when the selector pins one.
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.requirements.iter().find(|r| r.field == field && r.op == FieldOp::Eq).map(|r| r.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            let op = if r.op == FieldOp::Eq { "=" } else { "!=" };
            write!(f, "{}{}{op}{}", if i > 0 { "," } else { "" }, r.field, escape_value(&r.value))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reqs(s: &str) -> Vec<(String, FieldOp, String)> {
        let sel = FieldSelector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        sel.requirements().iter().map(|r| (r.field.clone(), r.op, r.value.clone())).collect()
    }

    fn r(f: &str, op: FieldOp, v: &str) -> (String, FieldOp, String) {
        (f.into(), op, v.into())
    }

    #[test]
    fn parses_operators() {
        use FieldOp::*;
        assert_eq!(reqs("a=b"), [r("a", Eq, "b")]);
        assert_eq!(reqs("a==b"), [r("a", Eq, "b")]);
        assert_eq!(reqs("a!=b"), [r("a", NotEq, "b")]);
        assert_eq!(reqs("spec.nodeName="), [r("spec.nodeName", Eq, "")]);
        // Terms come out sorted.
        assert_eq!(reqs("z=1,a!=2"), [r("a", NotEq, "2"), r("z", Eq, "1")]);
        assert_eq!(reqs(""), []);
        assert_eq!(reqs(",,"), []);
        assert_eq!(reqs("="), []);
        assert_eq!(reqs("a=b,="), [r("a", Eq, "b")]);
        // No trimming: spaces belong to the field and value.
        assert_eq!(reqs(" a = b"), [r(" a ", Eq, " b")]);
        assert_eq!(reqs("=x"), [r("", Eq, "x")]);
    }

    #[test]
    fn escapes_in_values() {
        use FieldOp::*;
        assert_eq!(reqs(r"a=x\,y"), [r("a", Eq, "x,y")]);
        assert_eq!(reqs(r"a=x\=y,b=\\"), [r("a", Eq, "x=y"), r("b", Eq, "\\")]);
        let sel = FieldSelector::parse(r"b=x\,y,a!=1\=2").unwrap();
        assert_eq!(sel.to_string(), r"a!=1\=2,b=x\,y");
        assert_eq!(escape_value(r"a\b,c=d"), r"a\\b\,c\=d");
    }

    #[test]
    fn errors_read_like_upstream() {
        let e = |s: &str| FieldSelector::parse(s).unwrap_err();
        assert_eq!(e("abc"), "invalid selector: 'abc'; can't understand 'abc'");
        assert_eq!(e("a=b,c"), "invalid selector: 'a=b,c'; can't understand 'c'");
        assert_eq!(e(r"a=b\x"), r"invalid field selector: invalid escape sequence: \x");
        assert_eq!(e(r"a=b\"), r"invalid field selector: invalid escape sequence: \");
        assert_eq!(e("a=b=c"), "invalid field selector: unescaped character in value: 61");
        assert_eq!(e("a==b==c"), "invalid field selector: unescaped character in value: 61");
    }

    #[test]
    fn matches_with_a_getter() {
        let get = |f: &str| match f {
            "spec.nodeName" => Some("n1".to_string()),
            "status.phase" => Some("Running".to_string()),
            _ => None,
        };
        let yes = [
            "spec.nodeName=n1",
            "spec.nodeName==n1",
            "status.phase!=Pending",
            "missing=",
            "missing!=x",
            "",
            "spec.nodeName=n1,status.phase=Running",
        ];
        for s in yes {
            assert!(FieldSelector::parse(s).unwrap().matches(get), "{s}");
        }
        let no = [
            "spec.nodeName=n2",
            "spec.nodeName!=n1",
            "missing=x",
            "missing!=",
            "spec.nodeName=n1,status.phase=Pending",
        ];
        for s in no {
            assert!(!FieldSelector::parse(s).unwrap().matches(get), "{s}");
        }
        let sel = FieldSelector::parse("metadata.name!=a,metadata.name=b").unwrap();
        assert_eq!(sel.requires_exact_match("metadata.name"), Some("b"));
        assert_eq!(sel.requires_exact_match("spec.nodeName"), None);
        assert!(FieldSelector::everything().is_empty());
    }
}
