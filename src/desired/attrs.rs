//! [`Attrs`]: a resource's attributes, a small map from field name to JSON value.
//!
//! A fleet holds three copies of every tenant's attributes at once (desired, recorded and
//! live), ten or so maps per tenant of two to eight fields each. A `BTreeMap` spends a
//! whole node (about 600 bytes) on each such map and an allocation on every key; this keeps
//! the fields in one sorted vector with inline keys, which at 10,000 tenants is the
//! difference between a plan that fits in 150 MB and one that does not.

use std::fmt;

use compact_str::CompactString;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Fields sorted by name, each name once. Serialized as a JSON object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attrs(Vec<(CompactString, Value)>);

impl Attrs {
    pub fn new() -> Attrs {
        Attrs(Vec::new())
    }

    fn find(&self, field: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(field))
    }

    pub fn get(&self, field: &str) -> Option<&Value> {
        self.find(field).ok().map(|i| &self.0[i].1)
    }

    /// A text attribute, or "" when it is missing or not text.
    pub fn str(&self, field: &str) -> &str {
        self.get(field)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
    }

    pub fn contains_key(&self, field: &str) -> bool {
        self.find(field).is_ok()
    }

    /// Sets `field`, returning the value it replaced.
    pub fn insert(&mut self, field: impl Into<CompactString>, value: Value) -> Option<Value> {
        let field = field.into();
        match self.find(&field) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (field, value));
                None
            }
        }
    }

    pub fn remove(&mut self, field: &str) -> Option<Value> {
        self.find(field).ok().map(|i| self.0.remove(i).1)
    }

    /// Fields in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sorts and removes repeated names, keeping the last value given for each, as a map's
    /// `insert` would.
    fn normalize(mut fields: Vec<(CompactString, Value)>) -> Attrs {
        // A stable sort keeps repeated names in the order given, so the last one wins.
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(CompactString, Value)> = Vec::with_capacity(fields.len());
        for (k, v) in fields {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => out.push((k, v)),
            }
        }
        out.shrink_to_fit();
        Attrs(out)
    }
}

impl<K: Into<CompactString>> FromIterator<(K, Value)> for Attrs {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Attrs {
        Attrs::normalize(iter.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl<'a> IntoIterator for &'a Attrs {
    type Item = (&'a str, &'a Value);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (CompactString, Value)>,
        fn(&'a (CompactString, Value)) -> (&'a str, &'a Value),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl Serialize for Attrs {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k.as_str(), v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Attrs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Attrs, D::Error> {
        struct AttrsVisitor;
        impl<'de> Visitor<'de> for AttrsVisitor {
            type Value = Attrs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of attributes")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Attrs, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((k, v)) = map.next_entry::<CompactString, Value>()? {
                    fields.push((k, v));
                }
                Ok(Attrs::normalize(fields))
            }
        }
        deserializer.deserialize_map(AttrsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn behaves_as_a_sorted_map() {
        let mut a: Attrs = [("b", json!(1)), ("a", json!(2)), ("b", json!(3))]
            .into_iter()
            .collect();
        assert_eq!(a.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(a.get("b"), Some(&json!(3)), "the last value given wins");
        assert_eq!(a.insert("c", json!(4)), None);
        assert_eq!(a.insert("a", json!(5)), Some(json!(2)));
        assert_eq!(a.remove("b"), Some(json!(3)));
        assert!(!a.contains_key("b"));
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"a":5,"c":4}"#);
        let back: Attrs = serde_json::from_str(r#"{"c":4,"a":5}"#).unwrap();
        assert_eq!(back, a);
    }
}
