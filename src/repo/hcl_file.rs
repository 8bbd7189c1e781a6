//! Reading HCL files (plans and the repo config) into serde types, with errors that point
//! at the line of the field they are about and name it by its path (`hook.billing.timeout`,
//! `quotas.seats`).
//!
//! The parser keeps where each attribute, block and object key is written ([`Spans`]); the
//! values are then read by a deserializer that knows the path of the value it is reading, so
//! a value serde refuses is reported at its own field, not at the file's first line.

use std::collections::BTreeMap;

use serde::de::{self, DeserializeOwned, IntoDeserializer};

use crate::diagnostic::Diagnostic;

/// Where each field of one HCL file is written, by its dotted path: attributes and blocks
/// (`events.keep_days`, `hook.billing`, `hook.billing.timeout`), keys of object values
/// (`quotas.seats`) and elements of lists (`bucket.transitions[0].days`).
#[derive(Debug, Clone, Default)]
pub struct Spans {
    file: String,
    at: BTreeMap<String, (usize, usize)>,
}

impl Spans {
    /// The line and column of `path`, or of the nearest enclosing field written in the file
    /// (a field left out is reported at its block), or the file's start.
    pub fn at(&self, path: &str) -> (usize, usize) {
        let mut p = path;
        loop {
            if let Some(at) = self.at.get(p) {
                return *at;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return (1, 1),
            }
        }
    }

    /// A problem with the field at `path`, placed where it is written.
    pub fn problem(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        let (line, column) = self.at(path);
        Diagnostic::new(&self.file, message)
            .at(line, column)
            .field(path)
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    /// Where the keys of `value`, read from the YAML `source`, are written (list elements
    /// are placed at their list).
    pub fn of_yaml(file: &str, source: &str, value: &hcl::Value) -> Spans {
        fn walk(
            value: &hcl::Value,
            prefix: &str,
            source: &str,
            at: &mut BTreeMap<String, (usize, usize)>,
        ) {
            if let hcl::Value::Object(map) = value {
                for (key, child) in map {
                    let path = join(prefix, key);
                    if let Some(place) = crate::diagnostic::locate_yaml_key(source, &path) {
                        at.insert(path.clone(), place);
                    }
                    walk(child, &path, source, at);
                }
            }
        }
        let mut at = BTreeMap::new();
        walk(value, "", source, &mut at);
        Spans {
            file: file.to_string(),
            at,
        }
    }

    /// Records where `path` is written; a path written twice is a problem at the second.
    fn insert(&mut self, path: String, offset: usize, source: &str, twice: &mut Vec<Diagnostic>) {
        let at = position(source, offset);
        if let Some(first) = self.at.get(&path) {
            twice.push(
                Diagnostic::new(
                    &self.file,
                    format!("is written twice (first at line {})", first.0),
                )
                .at(at.0, at.1)
                .field(path)
                .hint("write each field and each block once"),
            );
            return;
        }
        self.at.insert(path, at);
    }
}

/// Deserializes `source`, with the place of each field: every problem at the line of the
/// field it is about, all of them in one go. Syntax errors are at the parser's position; a
/// field written twice is refused before anything is read.
pub fn parse<T: DeserializeOwned>(file: &str, source: &str) -> Result<(T, Spans), Vec<Diagnostic>> {
    let (value, spans) = parse_value(file, source)?;
    match read_all(value, &spans) {
        (Some(t), problems) if problems.is_empty() => Ok((t, spans)),
        (_, problems) => Err(problems),
    }
}

/// The file's values as hcl-rs reads a body (blocks become objects keyed by their labels),
/// with where each is written, for a reader that takes some out before the rest is read.
pub fn parse_value(file: &str, source: &str) -> Result<(hcl::Value, Spans), Vec<Diagnostic>> {
    let body =
        hcl::edit::parser::parse_body(source).map_err(|e| vec![syntax_error(file, source, &e)])?;
    let mut spans = Spans {
        file: file.to_string(),
        at: BTreeMap::new(),
    };
    let mut twice = Vec::new();
    index_body(&body, "", source, &mut spans, &mut twice);
    if !twice.is_empty() {
        return Err(twice);
    }
    let value: hcl::Value = hcl::from_body(hcl::Body::from(body)).map_err(|e| {
        vec![Diagnostic::new(
            file,
            crate::diagnostic::plain_words(&e.to_string()),
        )]
    })?;
    Ok((value, spans))
}

/// Reads the block `name` (taken out of the file's values) into `T`, as [`read_all`] does,
/// each problem named by its path under the block (`redis.url`).
pub fn read_block<T: DeserializeOwned>(
    name: &str,
    block: hcl::Value,
    spans: &Spans,
) -> (Option<T>, Vec<Diagnostic>) {
    let mut around = hcl::Map::new();
    around.insert(name.to_string(), block);
    let (read, problems) = read_all::<BTreeMap<String, T>>(hcl::Value::Object(around), spans);
    (read.and_then(|mut m| m.remove(name)), problems)
}

/// Reads `value` into `T`, reporting every field serde refuses, each at its place in
/// `spans`. serde stops at the first refused value: it is reported, taken out, and the rest
/// read again, so one run reports them all (up to a bound). Returns what was read with
/// those fields taken out (none when a field it needs is missing or was taken out), and
/// the problems.
pub fn read_all<T: DeserializeOwned>(
    mut value: hcl::Value,
    spans: &Spans,
) -> (Option<T>, Vec<Diagnostic>) {
    let mut problems: Vec<Diagnostic> = Vec::new();
    loop {
        match T::deserialize(Node(value.clone())) {
            Ok(t) => return (Some(t), problems),
            Err(e) => {
                let d = e.diagnostic(spans);
                if e.message.starts_with("missing field ") {
                    // Missing because it was taken out: already reported as it was.
                    if !problems.iter().any(|p| p.field == d.field) {
                        problems.push(d);
                    }
                    return (None, problems);
                }
                problems.push(d);
                if problems.len() >= 50 || !take_out(&mut value, &e.segments()) {
                    return (None, problems);
                }
            }
        }
    }
}

/// Removes the field at `path` (outermost first) from `value`, or the list holding it (an
/// element cannot be taken out without renumbering the rest); false when there is none.
fn take_out(value: &mut hcl::Value, path: &[String]) -> bool {
    let keys: Vec<&String> = path.iter().take_while(|s| !s.starts_with('[')).collect();
    let Some((last, parents)) = keys.split_last() else {
        return false;
    };
    let mut at = value;
    for key in parents {
        match at {
            hcl::Value::Object(map) => match map.get_mut(key.as_str()) {
                Some(v) => at = v,
                None => return false,
            },
            _ => return false,
        }
    }
    match at {
        hcl::Value::Object(map) => map.shift_remove(last.as_str()).is_some(),
        _ => false,
    }
}

/// The parser's message and position; a number too large to read is said so.
fn syntax_error(file: &str, source: &str, e: &hcl::edit::parser::Error) -> Diagnostic {
    let loc = e.location();
    let (line, column) = (loc.line(), loc.column());
    let text = source
        .lines()
        .nth(line.saturating_sub(1))
        .unwrap_or_default();
    let rest = text.get(column.saturating_sub(1)..).unwrap_or_default();
    // The parser gives up at the start of the attribute whose number overflows (of the
    // object holding it): the number is further on.
    let from: usize = source
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let after = source.get(from..).unwrap_or_default();
    let too_large = after
        .split(|c: char| !c.is_ascii_digit())
        .find(|run| !run.is_empty() && run.parse::<u64>().is_err());
    if let Some(digits) = too_large {
        let offset = from + after.find(digits).unwrap_or(0);
        let (line, column) = position(source, offset);
        let text = source.lines().nth(line - 1).unwrap_or_default();
        let key: String = text
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
            .collect();
        let d = Diagnostic::new(
            file,
            format!("the number {digits} is too large (at most {})", u64::MAX),
        )
        .at(line, column)
        .hint("a whole number up to 18446744073709551615");
        return if key.is_empty() { d } else { d.field(key) };
    }
    if e.message().contains("redefined attribute") {
        // The parser refuses an attribute written twice in one body; it is said as the
        // field it is, with where it was first written.
        let key: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
            .collect();
        let first = source
            .lines()
            .take(line.saturating_sub(1))
            .enumerate()
            .filter(|(_, l)| {
                l.trim_start()
                    .strip_prefix(key.as_str())
                    .is_some_and(|r| r.trim_start().starts_with('='))
            })
            .last()
            .map(|(i, _)| format!(" (first at line {})", i + 1))
            .unwrap_or_default();
        return Diagnostic::new(file, format!("is written twice{first}"))
            .at(line, column)
            .field(key)
            .hint("write each field once");
    }
    Diagnostic::new(file, format!("syntax error: {}", e.message())).at(line, column)
}

/// The 1-based line and column of a byte offset.
fn position(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn index_body(
    body: &hcl::edit::structure::Body,
    prefix: &str,
    source: &str,
    spans: &mut Spans,
    twice: &mut Vec<Diagnostic>,
) {
    use hcl::edit::structure::{BlockLabel, Structure};
    use hcl::edit::Span;
    for structure in body.iter() {
        match structure {
            Structure::Attribute(attr) => {
                let path = join(prefix, attr.key.as_str());
                let offset = attr.key.span().map_or(0, |s| s.start);
                spans.insert(path.clone(), offset, source, twice);
                index_expr(&attr.value, &path, source, spans, twice);
            }
            Structure::Block(block) => {
                let mut path = join(prefix, block.ident.as_str());
                for label in &block.labels {
                    let label = match label {
                        BlockLabel::Ident(i) => i.as_str().to_string(),
                        BlockLabel::String(s) => s.as_str().to_string(),
                    };
                    path = join(&path, &label);
                }
                let offset = block.ident.span().map_or(0, |s| s.start);
                spans.insert(path.clone(), offset, source, twice);
                index_body(&block.body, &path, source, spans, twice);
            }
        }
    }
}

fn index_expr(
    expr: &hcl::edit::expr::Expression,
    path: &str,
    source: &str,
    spans: &mut Spans,
    twice: &mut Vec<Diagnostic>,
) {
    use hcl::edit::expr::{Expression, ObjectKey};
    use hcl::edit::Span;
    match expr {
        Expression::Object(object) => {
            for (key, value) in object.iter() {
                let name = match key {
                    ObjectKey::Ident(i) => i.as_str().to_string(),
                    ObjectKey::Expression(Expression::String(s)) => s.as_str().to_string(),
                    ObjectKey::Expression(_) => continue,
                };
                let child = join(path, &name);
                let offset = key.span().map_or(0, |s| s.start);
                spans.insert(child.clone(), offset, source, twice);
                index_expr(value.expr(), &child, source, spans, twice);
            }
        }
        Expression::Array(array) => {
            for (i, element) in array.iter().enumerate() {
                let child = format!("{path}[{i}]");
                let offset = element.span().map_or(0, |s| s.start);
                spans.insert(child.clone(), offset, source, twice);
                index_expr(element, &child, source, spans, twice);
            }
        }
        _ => {}
    }
}

/// A serde error with the path of the value it is about, outermost first.
#[derive(Debug)]
pub struct PathError {
    message: String,
    path: Vec<String>,
}

impl PathError {
    /// The same error, one level up: under the map key or list index `segment`.
    fn under(mut self, segment: String) -> Self {
        self.path.push(segment);
        self
    }

    /// The path's segments, outermost first.
    fn segments(&self) -> Vec<String> {
        self.path.iter().rev().cloned().collect()
    }

    fn path(&self) -> String {
        let mut out = String::new();
        for segment in self.path.iter().rev() {
            if !segment.starts_with('[') && !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
        out
    }

    /// The problem as a person reads it: at the field's line, named by its path (a missing
    /// field by the path it should have), with serde's words made plain.
    fn diagnostic(&self, spans: &Spans) -> Diagnostic {
        let path = self.path();
        let mut d = crate::diagnostic::from_serde(&spans.file, &self.message);
        let field = match self.message.strip_prefix("missing field ") {
            Some(rest) => crate::diagnostic::backticked(rest).map(|f| join(&path, &f)),
            None if self.message.starts_with("unknown field ") => d.field.take().map(|f| {
                // The unknown key is the last segment of the path already.
                if path.is_empty() {
                    f
                } else {
                    path.clone()
                }
            }),
            None => (!path.is_empty()).then(|| path.clone()),
        };
        d.field = field.or(d.field);
        let (line, column) = spans.at(&path);
        d.at(line, column)
    }
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PathError {}

impl de::Error for PathError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        PathError {
            message: msg.to_string(),
            path: Vec::new(),
        }
    }
}

/// One value of the file, read by serde; errors below it carry their path up.
struct Node(hcl::Value);

impl<'de> de::Deserializer<'de> for Node {
    type Error = PathError;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.0 {
            hcl::Value::Null => visitor.visit_unit(),
            hcl::Value::Bool(b) => visitor.visit_bool(b),
            hcl::Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            hcl::Value::String(s) => visitor.visit_string(s),
            hcl::Value::Array(items) => visitor.visit_seq(Seq {
                items: items.into_iter().enumerate(),
            }),
            hcl::Value::Object(map) => visitor.visit_map(Map {
                entries: map.into_iter(),
                value: None,
            }),
        }
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.0 {
            hcl::Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, PathError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PathError> {
        match self.0 {
            hcl::Value::String(s) => visitor.visit_enum(s.into_deserializer()),
            other => Err(de::Error::invalid_type(unexpected(&other), &"a name")),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

fn unexpected(v: &hcl::Value) -> de::Unexpected<'_> {
    match v {
        hcl::Value::Null => de::Unexpected::Unit,
        hcl::Value::Bool(b) => de::Unexpected::Bool(*b),
        hcl::Value::Number(_) => de::Unexpected::Other("a number"),
        hcl::Value::String(s) => de::Unexpected::Str(s),
        hcl::Value::Array(_) => de::Unexpected::Seq,
        hcl::Value::Object(_) => de::Unexpected::Map,
    }
}

struct Seq {
    items: std::iter::Enumerate<std::vec::IntoIter<hcl::Value>>,
}

impl<'de> de::SeqAccess<'de> for Seq {
    type Error = PathError;

    fn next_element_seed<S: de::DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, PathError> {
        match self.items.next() {
            None => Ok(None),
            Some((i, v)) => seed
                .deserialize(Node(v))
                .map(Some)
                .map_err(|e| e.under(format!("[{i}]"))),
        }
    }
}

struct Map {
    entries: <hcl::Map<String, hcl::Value> as IntoIterator>::IntoIter,
    value: Option<(String, hcl::Value)>,
}

impl<'de> de::MapAccess<'de> for Map {
    type Error = PathError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, PathError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let read = seed
            .deserialize(key.clone().into_deserializer())
            .map_err(|e: PathError| e.under(key.clone()))?;
        self.value = Some((key, value));
        Ok(Some(read))
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, PathError> {
        let (key, value) = self
            .value
            .take()
            .ok_or_else(|| <PathError as de::Error>::custom("a value without its key"))?;
        seed.deserialize(Node(value)).map_err(|e| e.under(key))
    }
}

/// A problem with `key` of the config's `block` (`s3`, `rabbitmq`, …), where it is written.
pub fn block_problem(
    spans: &Spans,
    block: &str,
    key: &str,
    message: String,
    hint: &str,
) -> Diagnostic {
    spans
        .problem(&format!("{block}.{key}"), message)
        .hint(hint.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct File {
        #[serde(default)]
        keep_days: u32,
        #[serde(default)]
        quotas: BTreeMap<String, u64>,
        #[serde(default)]
        hook: BTreeMap<String, Hook>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Hook {
        on: Vec<String>,
        #[serde(default)]
        timeout: Option<String>,
    }

    fn err(src: &str) -> Diagnostic {
        parse::<File>("x.hcl", src).unwrap_err().remove(0)
    }

    #[test]
    fn every_refused_value_is_reported_in_one_go() {
        let src = "keep_days = -1\nquotas = {\n  a = 1\n  b = -2\n}\ncolour = 1\n";
        let e = parse::<File>("x.hcl", src).unwrap_err();
        let fields: Vec<_> = e
            .iter()
            .map(|d| (d.line, d.field.clone().unwrap()))
            .collect();
        assert_eq!(
            fields,
            [
                (1, "keep_days".to_string()),
                (4, "quotas.b".to_string()),
                (6, "colour".to_string())
            ]
        );
    }

    #[test]
    fn a_refused_value_is_at_its_field() {
        let d = err("\n\nkeep_days = -1\n");
        assert_eq!((d.line, d.field.as_deref()), (3, Some("keep_days")), "{d}");
        let d = err("quotas = {\n  seats = -3\n}\n");
        assert_eq!(
            (d.line, d.field.as_deref()),
            (2, Some("quotas.seats")),
            "{d}"
        );
        let d = err(
            "hook \"a\" {\n  on = [\"x\"]\n}\nhook \"b\" {\n  on = [\"x\"]\n  timeout = 5\n}\n",
        );
        assert_eq!(
            (d.line, d.field.as_deref()),
            (6, Some("hook.b.timeout")),
            "{d}"
        );
        let d = err("hook \"a\" {\n  on = [1]\n}\n");
        assert_eq!(
            (d.line, d.field.as_deref()),
            (2, Some("hook.a.on[0]")),
            "{d}"
        );
    }

    #[test]
    fn missing_unknown_twice_and_too_large_are_placed() {
        let d = err("hook \"a\" {\n  timeout = \"1s\"\n}\n");
        assert_eq!((d.line, d.field.as_deref()), (1, Some("hook.a.on")), "{d}");
        let d = err("\nhook \"a\" {\n  on = []\n  colour = 1\n}\n");
        assert_eq!(
            (d.line, d.field.as_deref()),
            (4, Some("hook.a.colour")),
            "{d}"
        );
        let d = err("keep_days = 1\n\nkeep_days = 2\n");
        assert_eq!((d.line, d.field.as_deref()), (3, Some("keep_days")), "{d}");
        assert!(d.message.contains("first at line 1"), "{d}");
        let d = err("\nkeep_days = 99999999999999999999999\n");
        assert_eq!(d.line, 2, "{d}");
        assert!(d.message.contains("too large"), "{d}");
    }
}
