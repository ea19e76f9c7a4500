//! `google.api.http` path templates: parsing and matching.
//!
//! The grammar (from `google/api/http.proto`):
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! Verb     = ":" LITERAL ;
//! ```
//! `{id}` is short for `{id=*}`; `**` matches the rest of the path and must come last.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    Any,
    /// `**`: zero or more segments, only last.
    Rest,
}

/// A variable: which request field it sets and which segments it captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// Field path, e.g. `["account_id"]` or `["user", "name"]`.
    pub field_path: Vec<String>,
    /// First captured segment.
    pub start: usize,
    /// One past the last captured segment (`segments.len()` when it ends in `**`).
    pub end: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    pub segments: Vec<Segment>,
    pub variables: Vec<Variable>,
    pub verb: Option<String>,
    /// The template as written.
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path template `{template}`: {why}")]
pub struct TemplateError {
    pub template: String,
    pub why: String,
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl PathTemplate {
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let err = |why: &str| TemplateError {
            template: template.to_owned(),
            why: why.to_owned(),
        };
        let rest = template
            .strip_prefix('/')
            .ok_or_else(|| err("must start with /"))?;
        // The verb is a `:` outside braces after the last `/`.
        let (path, verb) = split_verb(rest);
        if verb.is_some_and(|v| v.is_empty() || v.contains(['/', '{', '}'])) {
            return Err(err("bad verb"));
        }
        let mut segments = Vec::new();
        let mut variables = Vec::new();
        let mut chars = path.char_indices().peekable();
        let mut current = String::new();
        let mut start_of_segment = true;
        while let Some((i, c)) = chars.next() {
            match c {
                '{' => {
                    if !start_of_segment || !current.is_empty() {
                        return Err(err("a variable must be a whole segment"));
                    }
                    let close = path[i..]
                        .find('}')
                        .map(|j| i + j)
                        .ok_or_else(|| err("unclosed {"))?;
                    let inner = &path[i + 1..close];
                    let (field, sub) = match inner.split_once('=') {
                        Some((f, s)) => (f, s),
                        None => (inner, "*"),
                    };
                    let field_path: Vec<String> = field.split('.').map(str::to_owned).collect();
                    if field_path.iter().any(|p| !is_ident(p)) {
                        return Err(err("bad field path in variable"));
                    }
                    let start = segments.len();
                    for s in sub.split('/') {
                        segments.push(match s {
                            "*" => Segment::Any,
                            "**" => Segment::Rest,
                            lit if is_literal(lit) => Segment::Literal(lit.to_owned()),
                            _ => return Err(err("bad segment inside variable")),
                        });
                    }
                    variables.push(Variable {
                        field_path,
                        start,
                        end: segments.len(),
                    });
                    // skip to after `}`
                    while let Some((j, _)) = chars.peek() {
                        if *j > close {
                            break;
                        }
                        chars.next();
                    }
                    start_of_segment = false;
                    match chars.peek() {
                        None | Some((_, '/')) => {}
                        _ => return Err(err("a variable must be a whole segment")),
                    }
                }
                '/' => {
                    if !current.is_empty() {
                        segments
                            .push(literal_or_wildcard(&current).ok_or_else(|| err("bad segment"))?);
                        current.clear();
                    } else if start_of_segment {
                        return Err(err("empty segment"));
                    }
                    start_of_segment = true;
                }
                c => {
                    current.push(c);
                    start_of_segment = false;
                }
            }
        }
        if !current.is_empty() {
            segments.push(literal_or_wildcard(&current).ok_or_else(|| err("bad segment"))?);
        } else if start_of_segment && !path.is_empty() {
            return Err(err("trailing /"));
        }
        if let Some(pos) = segments.iter().position(|s| *s == Segment::Rest)
            && pos + 1 != segments.len()
        {
            return Err(err("** must be the last segment"));
        }
        Ok(Self {
            segments,
            variables,
            verb: verb.map(str::to_owned),
            source: template.to_owned(),
        })
    }

    /// Matches a request path (`/v1/accounts/7:freeze`); the variables' values, percent-decoded.
    pub fn matches(&self, path: &str) -> Option<Vec<(Vec<String>, String)>> {
        let rest = path.strip_prefix('/')?;
        let rest = match &self.verb {
            Some(verb) => {
                let stripped = rest.strip_suffix(verb.as_str())?.strip_suffix(':')?;
                // the verb must follow the last segment, not a `/`
                if stripped.ends_with('/') {
                    return None;
                }
                stripped
            }
            None => rest,
        };
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        // `a//b` is not a path any template matches
        if parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        // without a verb of its own, a template does not match a path whose last segment carries one
        if self.verb.is_none()
            && parts
                .last()
                .is_some_and(|last| last.contains(':') && !self.ends_in_rest())
        {
            return None;
        }
        let mut bounds = Vec::with_capacity(self.segments.len());
        let mut at = 0;
        for seg in &self.segments {
            match seg {
                Segment::Literal(lit) => {
                    if parts.get(at).map(|p| decode(p)) != Some(lit.clone()) {
                        return None;
                    }
                    bounds.push(at);
                    at += 1;
                }
                Segment::Any => {
                    parts.get(at)?;
                    bounds.push(at);
                    at += 1;
                }
                Segment::Rest => {
                    bounds.push(at);
                    at = parts.len();
                }
            }
        }
        if at != parts.len() {
            return None;
        }
        bounds.push(at);
        let values = self
            .variables
            .iter()
            .map(|v| {
                let from = bounds[v.start];
                let to = if v.end < bounds.len() {
                    bounds[v.end]
                } else {
                    parts.len()
                };
                let value = parts[from..to]
                    .iter()
                    .map(|p| decode(p))
                    .collect::<Vec<_>>()
                    .join("/");
                (v.field_path.clone(), value)
            })
            .collect();
        Some(values)
    }

    fn ends_in_rest(&self) -> bool {
        self.segments.last() == Some(&Segment::Rest)
    }

    /// Literal segments count; more literals = more specific, tried first.
    pub fn specificity(&self) -> (bool, usize, usize) {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        (self.verb.is_some(), literals, self.segments.len())
    }

    /// The OpenAPI form: `/v1/accounts/{id}:freeze`, one `{name}` per variable.
    pub fn openapi_path(&self) -> String {
        let mut out = String::new();
        let mut i = 0;
        while i < self.segments.len() {
            out.push('/');
            if let Some(v) = self.variables.iter().find(|v| v.start == i) {
                out.push('{');
                out.push_str(&v.field_path.join("."));
                out.push('}');
                i = v.end.max(i + 1);
                continue;
            }
            match &self.segments[i] {
                Segment::Literal(l) => out.push_str(l),
                Segment::Any => out.push('*'),
                Segment::Rest => out.push_str("**"),
            }
            i += 1;
        }
        if out.is_empty() {
            out.push('/');
        }
        if let Some(verb) = &self.verb {
            out.push(':');
            out.push_str(verb);
        }
        out
    }
}

fn split_verb(rest: &str) -> (&str, Option<&str>) {
    let mut depth = 0;
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    for (i, c) in rest.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ':' if depth == 0 && i >= last_slash => return (&rest[..i], Some(&rest[i + 1..])),
            _ => {}
        }
    }
    // a verb after a variable: `{id}:freeze` — `:` after the closing brace, also after last `/`
    (rest, None)
}

fn literal_or_wildcard(s: &str) -> Option<Segment> {
    match s {
        "*" => Some(Segment::Any),
        "**" => Some(Segment::Rest),
        lit if is_literal(lit) => Some(Segment::Literal(lit.to_owned())),
        _ => None,
    }
}

fn is_literal(s: &str) -> bool {
    !s.is_empty() && !s.contains(['{', '}', '*', ':', '='])
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(t: &str, path: &str) -> Option<Vec<(String, String)>> {
        PathTemplate::parse(t)
            .unwrap()
            .matches(path)
            .map(|v| v.into_iter().map(|(f, s)| (f.join("."), s)).collect())
    }

    #[test]
    fn literal_template_matches_only_itself() {
        assert_eq!(vars("/v1/users", "/v1/users"), Some(vec![]));
        assert_eq!(vars("/v1/users", "/v1/users/x"), None);
        assert_eq!(vars("/v1/users", "/v1/user"), None);
        assert_eq!(vars("/v1/users", "/v1//users"), None);
    }

    #[test]
    fn variable_captures_one_segment_percent_decoded() {
        assert_eq!(
            vars("/v1/users/{username}", "/v1/users/al%20ice"),
            Some(vec![("username".into(), "al ice".into())])
        );
        assert_eq!(vars("/v1/users/{username}", "/v1/users"), None);
        assert_eq!(vars("/v1/users/{username}", "/v1/users/a/b"), None);
    }

    #[test]
    fn custom_verb_is_matched_and_stripped() {
        let t = "/v1/accounts/{id}:freeze";
        assert_eq!(
            vars(t, "/v1/accounts/42:freeze"),
            Some(vec![("id".into(), "42".into())])
        );
        assert_eq!(vars(t, "/v1/accounts/42:unfreeze"), None);
        assert_eq!(vars(t, "/v1/accounts/42"), None);
        assert_eq!(vars("/v1/tokens:renew", "/v1/tokens:renew"), Some(vec![]));
        assert_eq!(vars("/v1/tokens:renew", "/v1/tokens"), None);
        // a template without a verb does not swallow one into its variable
        assert_eq!(vars("/v1/accounts/{id}", "/v1/accounts/42:freeze"), None);
    }

    #[test]
    fn nested_field_paths_and_deep_wildcards() {
        assert_eq!(
            vars("/v1/{name=shelves/*/books/**}", "/v1/shelves/1/books/a/b"),
            Some(vec![("name".into(), "shelves/1/books/a/b".into())])
        );
        assert_eq!(
            vars("/v1/{book.name=shelves/*}/x", "/v1/shelves/7/x"),
            Some(vec![("book.name".into(), "shelves/7".into())])
        );
        assert_eq!(vars("/v1/{name=shelves/*}", "/v1/racks/7"), None);
    }

    #[test]
    fn malformed_templates_are_rejected() {
        for bad in [
            "v1/users",
            "/v1/{id",
            "/v1/x{id}",
            "/v1/**/x",
            "/v1/users/",
            "/v1/{a-b}",
            "/v1/x:",
        ] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn openapi_path_names_each_variable() {
        let t = PathTemplate::parse("/v1/accounts/{id}:freeze").unwrap();
        assert_eq!(t.openapi_path(), "/v1/accounts/{id}:freeze");
        let t = PathTemplate::parse("/v1/{name=shelves/*/books/*}").unwrap();
        assert_eq!(t.openapi_path(), "/v1/{name}");
    }
}
