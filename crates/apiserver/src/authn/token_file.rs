//! `--token-auth-file`: static bearer tokens in upstream's CSV form,
//! `token,user,uid[,"group1,group2"]`, one per line.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::serve::Identity;

#[derive(Default, Debug)]
pub struct TokenFile {
    tokens: HashMap<String, Identity>,
}

impl TokenFile {
    pub fn load(path: &Path) -> Result<TokenFile> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading the token file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("token file {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<TokenFile> {
        let mut tokens = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let record = csv_fields(line).with_context(|| format!("line {}", n + 1))?;
            if record.len() < 3 {
                bail!("line {}: must have at least 3 columns (token, user name, user uid), found {}", n + 1, record.len());
            }
            if record[0].is_empty() {
                tracing::warn!(line = n + 1, "empty token in the token file; skipped");
                continue;
            }
            let mut groups: Vec<String> = match record.get(3) {
                Some(g) => g.split(',').map(str::to_string).collect(),
                None => vec![],
            };
            groups.push(super::AUTHENTICATED.to_string());
            let id = Identity { user: record[1].clone(), uid: record[2].clone(), groups, extra: Default::default() };
            if tokens.insert(record[0].clone(), id).is_some() {
                tracing::warn!(line = n + 1, "duplicate token in the token file; the later one wins");
            }
        }
        Ok(TokenFile { tokens })
    }

    pub fn get(&self, token: &str) -> Option<&Identity> {
        self.tokens.get(token)
    }
}

/// The fields of one CSV record: comma-separated, a field in double quotes
/// may hold commas, `""` inside quotes is a quote.
fn csv_fields(line: &str) -> Result<Vec<String>> {
    let (mut fields, mut field, mut chars) = (Vec::new(), String::new(), line.chars().peekable());
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            '"' if quoted => quoted = false,
            '"' if field.is_empty() => quoted = true,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    if quoted {
        bail!("unterminated quoted field");
    }
    fields.push(field);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstream_csv() {
        let f = TokenFile::parse("s3cret,alice,1001,\"dev,ops\"\n\n other,bob,1002\n,nobody,3\n").unwrap();
        let alice = f.get("s3cret").unwrap();
        assert_eq!((alice.user.as_str(), alice.uid.as_str()), ("alice", "1001"));
        assert_eq!(alice.groups, ["dev", "ops", "system:authenticated"]);
        let bob = f.get(" other").unwrap();
        assert_eq!(bob.groups, ["system:authenticated"]);
        assert!(f.get("").is_none() && f.get("nope").is_none());
        assert!(TokenFile::parse("t,user\n").unwrap_err().to_string().contains("at least 3 columns"));
        assert!(TokenFile::parse("t,\"user,1\n").is_err());
        assert_eq!(csv_fields(r#"a,"b ""q"" c",d"#).unwrap(), ["a", "b \"q\" c", "d"]);
    }
}
