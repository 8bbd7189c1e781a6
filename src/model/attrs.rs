//! [`Attrs`]: a resource's attributes, a small map from field name to JSON value.
//!
//! A plan holds the recorded and the live attributes of every tenant at once, ten or so
//! maps per tenant, and compares each with what the files ask for. Nearly all of them are
//! equal. So a map is kept as its canonical JSON text (fields sorted, compact), one
//! allocation of about the size of the JSON, and two maps are equal when their texts are;
//! the parsed fields are made only when something looks inside, and then kept. At 10,000
//! tenants this is the difference between a plan that fits in 150 MB and one that does not.

use std::fmt;
use std::sync::OnceLock;

use compact_str::CompactString;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

type Fields = Vec<(CompactString, Value)>;

/// Fields sorted by name, each name once. Serialized as a JSON object.
pub struct Attrs {
    /// The canonical JSON text: equal maps have equal texts.
    text: Box<str>,
    /// The fields, parsed from `text` on first look (boxed: most maps are never parsed,
    /// and an empty box keeps every map small).
    fields: OnceLock<Box<Fields>>,
}

/// A copy is its text alone, parsed again if something looks inside it. Copies are what a
/// plan and a run keep (a change's desired attributes, a tenant's record at each
/// checkpoint), and the parsed fields are twice to three times the text: kept in every
/// copy, they were a third of a fresh apply's memory.
impl Clone for Attrs {
    fn clone(&self) -> Attrs {
        Attrs {
            text: self.text.clone(),
            fields: OnceLock::new(),
        }
    }
}

impl Attrs {
    pub fn new() -> Attrs {
        Attrs::from_sorted(Vec::new())
    }

    /// `fields` must be sorted by name, each name once.
    fn from_sorted(fields: Fields) -> Attrs {
        Attrs {
            text: text_of(&fields).into_boxed_str(),
            fields: OnceLock::new(),
        }
    }

    fn fields(&self) -> &Fields {
        self.fields.get_or_init(|| Box::new(parse(&self.text)))
    }

    fn find(&self, field: &str) -> Result<usize, usize> {
        search(self.fields(), field)
    }

    pub fn get(&self, field: &str) -> Option<&Value> {
        self.find(field).ok().map(|i| &self.fields()[i].1)
    }

    /// The fields in name order, owned, read without keeping the parsed map: for a copy of
    /// them all that the map need not hold too (a planned create's field list).
    pub fn to_fields(&self) -> Vec<(CompactString, Value)> {
        match self.fields.get() {
            Some(fields) => fields.to_vec(),
            None => parse(&self.text),
        }
    }

    /// The value of `field`, read without keeping the parsed map: for a look at one field
    /// of many maps.
    pub fn value_of(&self, field: &str) -> Option<Value> {
        if let Some(fields) = self.fields.get() {
            return fields
                .iter()
                .find(|(k, _)| k == field)
                .map(|(_, v)| v.clone());
        }
        let mut fields = parse(&self.text);
        let i = fields.iter().position(|(k, _)| k == field)?;
        Some(fields.swap_remove(i).1)
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

    /// Changes the fields, then writes the text anew. A map that was not parsed is not
    /// kept parsed: providers add a field to each map they read.
    fn edit<T>(&mut self, f: impl FnOnce(&mut Fields) -> T) -> T {
        let mut unparsed;
        let fields = match self.fields.get_mut() {
            Some(fields) => &mut **fields,
            None => {
                unparsed = parse(&self.text);
                &mut unparsed
            }
        };
        let out = f(fields);
        self.text = text_of(fields).into_boxed_str();
        out
    }

    /// Sets `field`, returning the value it replaced.
    pub fn insert(&mut self, field: impl Into<CompactString>, value: Value) -> Option<Value> {
        let field = field.into();
        self.edit(|fields| match search(fields, &field) {
            Ok(i) => Some(std::mem::replace(&mut fields[i].1, value)),
            Err(i) => {
                fields.insert(i, (field, value));
                None
            }
        })
    }

    pub fn remove(&mut self, field: &str) -> Option<Value> {
        self.edit(|fields| {
            let i = search(fields, field).ok()?;
            Some(fields.remove(i).1)
        })
    }

    /// Fields in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.fields().iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields().iter().map(|(k, _)| k.as_str())
    }

    pub fn len(&self) -> usize {
        self.fields().len()
    }

    pub fn is_empty(&self) -> bool {
        &*self.text == "{}"
    }

    /// A map from its JSON text, as a recorded state holds it. Text that is already
    /// canonical, as every state this tool writes is, is kept as it is: nothing is parsed or
    /// written again, which for a large state is most of reading it. Anything else is parsed
    /// and made canonical, or refused if it is not a JSON object.
    pub fn from_json(text: Box<str>) -> Result<Attrs, serde_json::Error> {
        if canonical::is_canonical_object(&text) {
            return Ok(Attrs {
                text,
                fields: OnceLock::new(),
            });
        }
        serde_json::from_str(&text)
    }

    /// Sorts and removes repeated names, keeping the last value given for each, as a map's
    /// `insert` would.
    fn normalize(mut fields: Fields) -> Attrs {
        // A stable sort keeps repeated names in the order given, so the last one wins.
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Fields = Vec::with_capacity(fields.len());
        for (k, v) in fields {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => out.push((k, v)),
            }
        }
        Attrs::from_sorted(out)
    }
}

/// Where `field` is among sorted fields, or where it would go.
fn search(fields: &Fields, field: &str) -> Result<usize, usize> {
    fields.binary_search_by(|(k, _)| k.as_str().cmp(field))
}

/// The canonical text of sorted fields: compact JSON. Objects inside are `serde_json`
/// maps, which keep their keys sorted, so equal values always give equal text.
fn text_of(fields: &Fields) -> String {
    let mut out = Vec::with_capacity(16 * fields.len() + 2);
    serde_json::to_writer(&mut out, &Borrowed(fields)).expect("JSON values serialize");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Text made by [`text_of`] parses back; anything else is a bug here.
fn parse(text: &str) -> Fields {
    let mut fields: Fields = Vec::new();
    let map: serde_json::Map<String, Value> =
        serde_json::from_str(text).expect("attributes hold their own canonical JSON");
    fields.reserve_exact(map.len());
    fields.extend(map.into_iter().map(|(k, v)| (CompactString::from(k), v)));
    fields
}

struct Borrowed<'a>(&'a Fields);

impl Serialize for Borrowed<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k.as_str(), v)?;
        }
        map.end()
    }
}

impl Default for Attrs {
    fn default() -> Attrs {
        Attrs::new()
    }
}

impl PartialEq for Attrs {
    fn eq(&self, other: &Attrs) -> bool {
        self.text == other.text
    }
}

impl fmt::Debug for Attrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
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
        self.fields().iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl Serialize for Attrs {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.fields.get() {
            Some(fields) => Borrowed(fields).serialize(serializer),
            // Writing a whole state must not leave every map parsed behind it.
            None => Borrowed(&parse(&self.text)).serialize(serializer),
        }
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

/// Recognizing canonical text without parsing it into values.
mod canonical {
    /// Whether `text` is a JSON object exactly as [`super::text_of`] would write it: no
    /// space outside strings, the keys of every object in strictly rising order, strings
    /// without escapes or control characters, numbers as plain integers of up to 18 digits
    /// (always within `i64`, written as given). It answers `false` for anything else,
    /// canonical or not (escaped strings, fractions), which then takes the slow path.
    ///
    /// The text must have been read as JSON already (serde_json limits its nesting to 128),
    /// so the recursion here is bounded.
    pub fn is_canonical_object(text: &str) -> bool {
        let b = text.as_bytes();
        let mut at = 0;
        b.first() == Some(&b'{') && object(b, &mut at) && at == b.len()
    }

    fn value(b: &[u8], at: &mut usize) -> bool {
        match b.get(*at) {
            Some(b'{') => object(b, at),
            Some(b'[') => array(b, at),
            Some(b'"') => string(b, at).is_some(),
            Some(b't') => literal(b, at, b"true"),
            Some(b'f') => literal(b, at, b"false"),
            Some(b'n') => literal(b, at, b"null"),
            Some(b'-' | b'0'..=b'9') => integer(b, at),
            _ => false,
        }
    }

    fn object(b: &[u8], at: &mut usize) -> bool {
        let mut previous: Option<&[u8]> = None;
        items(at, b'}', b, |at| {
            // serde_json's maps are sorted by the keys' bytes; without escapes the bytes
            // in the text are the key's.
            let Some(key) = string(b, at) else {
                return false;
            };
            if previous.is_some_and(|p| p >= key) {
                return false;
            }
            previous = Some(key);
            if b.get(*at) != Some(&b':') {
                return false;
            }
            *at += 1;
            value(b, at)
        })
    }

    fn array(b: &[u8], at: &mut usize) -> bool {
        items(at, b']', b, |at| value(b, at))
    }

    /// From an opening bracket to its `close`: `item`s separated by commas, or none.
    fn items(
        at: &mut usize,
        close: u8,
        b: &[u8],
        mut item: impl FnMut(&mut usize) -> bool,
    ) -> bool {
        *at += 1;
        if b.get(*at) == Some(&close) {
            *at += 1;
            return true;
        }
        loop {
            if !item(at) {
                return false;
            }
            match b.get(*at) {
                Some(b',') => *at += 1,
                Some(&c) if c == close => {
                    *at += 1;
                    return true;
                }
                _ => return false,
            }
        }
    }

    /// A string's content, if it needs no escape: serde_json writes such a string as it is.
    fn string<'a>(b: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
        if b.get(*at) != Some(&b'"') {
            return None;
        }
        let start = *at + 1;
        let mut end = start;
        loop {
            match *b.get(end)? {
                b'"' => break,
                b'\\' => return None,
                c if c < 0x20 => return None,
                _ => end += 1,
            }
        }
        *at = end + 1;
        Some(&b[start..end])
    }

    fn literal(b: &[u8], at: &mut usize, word: &[u8]) -> bool {
        if b[*at..].starts_with(word) {
            *at += word.len();
            true
        } else {
            false
        }
    }

    /// `-?(0|[1-9][0-9]*)`, up to 18 digits, and not `-0` (which is written `0`).
    fn integer(b: &[u8], at: &mut usize) -> bool {
        let negative = b[*at] == b'-';
        let start = *at + usize::from(negative);
        let digits = b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
        let end = start + digits;
        let leading_zero = b.get(start) == Some(&b'0');
        let ok = (1..=18).contains(&digits)
            // No leading zero, and no `-0`.
            && !(leading_zero && (digits > 1 || negative))
            // A fraction or an exponent is left to the slow path.
            && !matches!(b.get(end), Some(b'.' | b'e' | b'E'));
        *at = end;
        ok
    }
}

/// A map of the given fields, for the attributes a target or the compiler writes.
pub fn attrs<const N: usize>(pairs: [(&str, Value); N]) -> Attrs {
    pairs.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A copy of a map that was looked into holds the text alone, and reads the same.
    #[test]
    fn a_copy_is_its_text_alone() {
        let a = Attrs::from_iter([("b".to_string(), json!(2)), ("a".to_string(), json!("x"))]);
        assert_eq!(a.str("a"), "x");
        assert!(
            a.fields.get().is_some(),
            "looked into, the map is kept parsed"
        );
        let copy = a.clone();
        assert!(copy.fields.get().is_none(), "the copy is not parsed");
        assert_eq!(copy, a);
        assert_eq!(copy.get("b"), Some(&json!(2)));
    }

    /// Its fields read whole leave a map that was not looked into unparsed.
    #[test]
    fn its_fields_read_whole_leave_it_unparsed() {
        let a = Attrs::from_iter([("b".to_string(), json!(2)), ("a".to_string(), json!("x"))]);
        let fields: Vec<(String, Value)> = a
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(fields, [("a".into(), json!("x")), ("b".into(), json!(2))]);
        assert!(a.fields.get().is_none(), "the map was kept parsed");
    }

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

    #[test]
    fn equal_maps_are_equal_however_they_were_made() {
        let parsed: Attrs =
            serde_json::from_str(r#"{ "tags": {"z": "1", "a": "2"}, "n": 5, "s": "x\"y" }"#)
                .unwrap();
        let built: Attrs = [
            ("s", json!("x\"y")),
            ("n", json!(5u32)),
            ("tags", json!({"a": "2", "z": "1"})),
        ]
        .into_iter()
        .collect();
        assert_eq!(parsed, built);
        assert_eq!(parsed.value_of("n"), Some(json!(5)));
        assert_eq!(parsed.str("s"), "x\"y");
        let mut edited = built.clone();
        edited.insert("n", json!(6));
        assert_ne!(edited, parsed);
        edited.insert("n", json!(5));
        assert_eq!(edited, parsed, "an edit writes the text anew");
        assert!(Attrs::new().is_empty() && !parsed.is_empty());
    }

    #[test]
    fn canonical_text_is_kept_and_anything_else_is_made_canonical() {
        let samples = [
            r#"{}"#,
            r#"{"a":1,"b":"x"}"#,
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{ "a": 1 }"#,
            r#"{"a":1.0}"#,
            r#"{"a":1.5e3}"#,
            r#"{"a":-0}"#,
            r#"{"a":0,"b":-7,"c":123456789012345678}"#,
            r#"{"n":12345678901234567890}"#,
            r#"{"a":007}"#,
            r#"{"a":"x\"y"}"#,
            r#"{"a":"\u0041"}"#,
            r#"{"a":"tab\there"}"#,
            r#"{"t":{"z":"1","a":"2"}}"#,
            r#"{"l":[3,1,{"b":null,"a":true}],"t":{"a":"2","z":"1"}}"#,
            r#"{"l":[{"b":1,"a":2}]}"#,
            r#"{"e":2,"é":1}"#,
            r#"{"é":1,"e":2}"#,
            r#"{"a":false,"b":null,"c":[],"d":{}}"#,
            r#"{"a":tru}"#,
            r#"{"a":1,}"#,
            r#"[1]"#,
            r#"5"#,
        ];
        for s in samples {
            let fast = Attrs::from_json(s.into());
            let slow = serde_json::from_str::<Attrs>(s);
            match (&fast, &slow) {
                (Ok(f), Ok(sl)) => assert_eq!(f.text, sl.text, "{s}"),
                (Err(_), Err(_)) => {}
                _ => panic!("{s}: {fast:?} against {slow:?}"),
            }
            // Whatever the check lets through is exactly what the slow path writes.
            if canonical::is_canonical_object(s) {
                assert_eq!(&*slow.unwrap().text, s);
            }
        }
        // What this module writes is recognized, so a state it wrote is read the fast way.
        let built: Attrs = [
            ("tags", json!({"z": "1", "a": "2"})),
            ("n", json!(-5)),
            ("list", json!([{"b": 1, "a": [true, null]}])),
            ("s", json!("plain ünïcode / text")),
        ]
        .into_iter()
        .collect();
        assert!(canonical::is_canonical_object(&built.text), "{built:?}");
        for refused in [
            r#"{"b":1,"a":2}"#,
            r#"{"a":"x\"y"}"#,
            r#"{"a":1.0}"#,
            r#"{ }"#,
        ] {
            assert!(!canonical::is_canonical_object(refused), "{refused}");
        }
    }
}
