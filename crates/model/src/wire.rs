//! The JSON shapes of DynamoDB's protocol, deserialized straight from a
//! request's bytes with DynamoDB's own complaints.
//!
//! DynamoDB checks a request in three passes, and a client can tell them
//! apart: first the whole body is read against the operation's shapes, and
//! a JSON value of the wrong kind anywhere is a `SerializationException`
//! (`NUMBER_VALUE cannot be converted to String`, `Start of structure or
//! map found where not expected`, ...); then every parameter constraint is
//! checked and all violations are reported together; then the semantic
//! rules (attribute values, expressions, key schemas). The wrappers here
//! are the first pass: a request type built from them (serde derive, every
//! field an `Option`) fails to deserialize exactly where DynamoDB answers
//! with a serialization error, and nowhere else.
//!
//! Attribute values ([`WireItem`], [`WireValue`]) are decoded into
//! [`AttributeValue`]s in the same pass, without an intermediate JSON tree;
//! the validation errors DynamoDB reports later (an empty set, a bad number,
//! two data types in one value) are kept in the value and surfaced by
//! [`WireItem::into_item`] when the operation reaches that pass.
//!
//! Messages follow what DynamoDB's JSON 1.0 endpoint sends; dynalite's
//! notes on the Coral deserializer and the public conformance suites are
//! where they were checked (docs/compatibility.md lists what could not be).

use crate::ModelError;
use crate::number::Number;
use crate::value::{AttributeValue, Item, MAX_NESTING_DEPTH, NESTING_MESSAGE, check_set};
use base64::Engine as _;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

/// Message of a structure (JSON object) where a scalar or list belongs.
pub const STRUCTURE_NOT_EXPECTED: &str = "Start of structure or map found where not expected";

fn bool_kind(b: bool) -> &'static str {
    if b { "TRUE_VALUE" } else { "FALSE_VALUE" }
}

macro_rules! reject_scalars {
    ($java:expr) => {
        fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
            Err(E::custom(format!(
                "{} cannot be converted to {}",
                bool_kind(b),
                $java
            )))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(E::custom(format!(
                "NUMBER_VALUE cannot be converted to {}",
                $java
            )))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(E::custom(format!(
                "NUMBER_VALUE cannot be converted to {}",
                $java
            )))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(E::custom(format!(
                "DECIMAL_VALUE cannot be converted to {}",
                $java
            )))
        }
    };
}

macro_rules! reject_containers {
    ($java:expr) => {
        fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(de::Error::custom(STRUCTURE_NOT_EXPECTED))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(de::Error::custom(format!(
                "Unrecognized collection type class java.lang.{}",
                $java
            )))
        }
    };
}

/// Every scalar JSON kind (boolean, number, string) refused with `$msg`.
macro_rules! reject_all_scalars {
    ($msg:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(E::custom($msg))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(E::custom($msg))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(E::custom($msg))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(E::custom($msg))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Err(E::custom($msg))
        }
    };
}

/// A string member.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Str(pub String);

impl std::ops::Deref for Str {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de> de::Deserialize<'de> for Str {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Str, E> {
                Ok(Str(s.to_string()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Str, E> {
                Ok(Str(s))
            }
            reject_scalars!("String");
            reject_containers!("String");
        }
        d.deserialize_any(V)
    }
}

/// An Integer member (Limit, Segment, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int(pub i64);

impl<'de> de::Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                Ok(Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Int, E> {
                // Coral truncates a decimal sent for an integer member.
                Ok(Int(v.floor() as i64))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Int, E> {
                Err(E::custom(format!(
                    "{} cannot be converted to Integer",
                    bool_kind(b)
                )))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Int, E> {
                Err(E::custom("STRING_VALUE cannot be converted to Integer"))
            }
            reject_containers!("Integer");
        }
        d.deserialize_any(V)
    }
}

/// A Boolean member. Like DynamoDB, the strings `true`, `1` and `yes` (and
/// their negatives) are read as booleans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag(pub bool);

impl<'de> de::Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a boolean")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Flag, E> {
                Ok(Flag(b))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Flag, E> {
                Err(E::custom("NUMBER_VALUE cannot be converted to Boolean"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Flag, E> {
                Err(E::custom("NUMBER_VALUE cannot be converted to Boolean"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Flag, E> {
                Err(E::custom("DECIMAL_VALUE cannot be converted to Boolean"))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Flag, E> {
                match s.to_ascii_uppercase().as_str() {
                    "TRUE" | "1" | "YES" => Ok(Flag(true)),
                    "FALSE" | "0" | "NO" => Ok(Flag(false)),
                    _ => Err(E::custom("Unexpected token received from parser")),
                }
            }
            reject_containers!("Boolean");
        }
        d.deserialize_any(V)
    }
}

/// A binary member: base64 text, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl<'de> de::Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("base64 text")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Blob, E> {
                decode_base64(s).map(Blob).map_err(E::custom)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Blob, E> {
                Err(E::custom(
                    "only base-64-encoded strings are convertible to bytes",
                ))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Blob, E> {
                Err(E::custom(
                    "only base-64-encoded strings are convertible to bytes",
                ))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Blob, E> {
                Err(E::custom(
                    "only base-64-encoded strings are convertible to bytes",
                ))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Blob, E> {
                Err(E::custom(
                    "only base-64-encoded strings are convertible to bytes",
                ))
            }
            fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Blob, A::Error> {
                Err(de::Error::custom(STRUCTURE_NOT_EXPECTED))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Blob, A::Error> {
                Err(de::Error::custom(
                    "Unrecognized collection type class java.nio.ByteBuffer",
                ))
            }
        }
        d.deserialize_any(V)
    }
}

/// Base64 as DynamoDB reads it: padded, canonical, a multiple of 4 long.
pub fn decode_base64(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(4) {
        return Err(format!(
            "Base64 encoded length is expected a multiple of 4 bytes but found: {}",
            s.len()
        ));
    }
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| "Invalid last non-pad Base64 character dectected".to_string())
}

/// A list member.
#[derive(Debug, Clone, PartialEq)]
pub struct List<T>(pub Vec<T>);

impl<'de, T: de::Deserialize<'de>> de::Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: de::Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(x) = seq.next_element()? {
                    out.push(x);
                }
                Ok(List(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<List<T>, A::Error> {
                Err(de::Error::custom(STRUCTURE_NOT_EXPECTED))
            }
            reject_all_scalars!("Unexpected field type");
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A map member (string keys), in the order the client sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Dict<T>(pub Vec<(String, T)>);

impl<T> Dict<T> {
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&String, &T)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl<'de, T: de::Deserialize<'de>> de::Deserialize<'de> for Dict<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: de::Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Dict<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Dict<T>, A::Error> {
                let mut out: Vec<(String, T)> = Vec::new();
                // Position of each key in `out`, so that a body of many
                // keys costs linear time, not quadratic.
                let mut at: HashMap<String, usize> = HashMap::new();
                while let Some(k) = m.next_key::<String>()? {
                    let v = m.next_value::<T>()?;
                    // A repeated key keeps its last value, as a JSON object does.
                    match at.get(&k).and_then(|&i| out.get_mut(i)) {
                        Some(slot) => slot.1 = v,
                        None => {
                            at.insert(k.clone(), out.len());
                            out.push((k, v));
                        }
                    }
                }
                Ok(Dict(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Dict<T>, A::Error> {
                Err(de::Error::custom(
                    "Unrecognized collection type java.util.Map<java.lang.String, java.lang.String>",
                ))
            }
            reject_all_scalars!("Unexpected field type");
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A structure member: a JSON object read into `T` (a serde-derived
/// request shape), anything else refused as DynamoDB refuses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Obj<T>(pub T);

impl<T> std::ops::Deref for Obj<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<'de, T: de::Deserialize<'de>> de::Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: de::Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a structure")
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(m)).map(Obj)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Obj<T>, A::Error> {
                Err(de::Error::custom(
                    "Unrecognized collection type class java.lang.Object",
                ))
            }
            reject_all_scalars!("Unexpected field type");
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// One attribute value as sent: decoded, or the validation error DynamoDB
/// reports for it once the request's constraints have passed.
#[derive(Debug, Clone, PartialEq)]
pub struct WireValue(pub Result<AttributeValue, String>);

/// A map of attribute values (an item, a key, ExpressionAttributeValues).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WireItem {
    item: Item,
    /// The first invalid attribute value, in request order: its name and
    /// DynamoDB's validation message.
    invalid: Option<(String, String)>,
    /// Members sent, valid or not.
    sent: usize,
}

impl WireItem {
    /// Members sent, valid or not.
    pub fn len(&self) -> usize {
        self.sent
    }
    pub fn is_empty(&self) -> bool {
        self.sent == 0
    }

    /// The item, or the first of its values' validation errors.
    pub fn into_item(self) -> Result<Item, ModelError> {
        match self.invalid {
            Some((_, m)) => Err(ModelError::Validation(m)),
            None => Ok(self.item),
        }
    }

    /// The first invalid value: its attribute name and the message.
    pub fn first_invalid(&self) -> Option<(&str, &str)> {
        self.invalid.as_ref().map(|(k, m)| (k.as_str(), m.as_str()))
    }
}

impl<'de> de::Deserialize<'de> for WireItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ItemVisitor { depth: 0 })
    }
}

struct ItemVisitor {
    depth: usize,
}

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = WireItem;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of attribute values")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<WireItem, A::Error> {
        let mut out = WireItem::default();
        while let Some(k) = m.next_key::<String>()? {
            let WireValue(v) = m.next_value_seed(ValueSeed { depth: self.depth })?;
            out.sent += 1;
            match v {
                Ok(v) => {
                    out.item.insert(k, v);
                }
                Err(e) => {
                    out.invalid.get_or_insert((k, e));
                }
            }
        }
        Ok(out)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<WireItem, A::Error> {
        Err(de::Error::custom(
            "Unrecognized collection type java.util.Map<java.lang.String, com.amazonaws.dynamodb.v20120810.AttributeValue>",
        ))
    }
    reject_all_scalars!("Unexpected field type");
}

struct ValueSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = WireValue;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<WireValue, D::Error> {
        d.deserialize_any(self)
    }
}

/// The members of one attribute value as sent, before the data-type rules.
#[derive(Default)]
struct Members {
    set: Vec<AttributeValue>,
    invalid: Option<String>,
}

impl Members {
    fn push(&mut self, v: Result<AttributeValue, String>) {
        match v {
            Ok(v) => self.set.push(v),
            Err(e) => {
                self.invalid.get_or_insert(e);
                // Counted as a set member for the "more than one" rule.
                self.set.push(AttributeValue::Null);
            }
        }
    }
}

fn invalid_value(m: impl fmt::Display) -> String {
    format!("One or more parameter values were invalid: {m}")
}

fn number(s: &str) -> Result<Number, String> {
    Number::parse(s).map_err(|e| e.to_string())
}

fn checked_set<T: PartialEq + Ord + Clone>(
    kind: &str,
    items: Vec<T>,
    show: impl Fn(&T) -> String,
    make: impl FnOnce(Vec<T>) -> AttributeValue,
) -> Result<AttributeValue, String> {
    check_set(kind, &items, show).map_err(|e| e.to_string())?;
    Ok(make(items))
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = WireValue;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an attribute value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<WireValue, A::Error> {
        let deeper = self.depth + 1;
        let mut members = Members::default();
        while let Some(k) = m.next_key::<std::borrow::Cow<'de, str>>()? {
            let v: Result<AttributeValue, String> = match k.as_ref() {
                "S" => match m.next_value::<Option<Str>>()? {
                    Some(s) => Ok(AttributeValue::S(s.0)),
                    None => continue,
                },
                "N" => match m.next_value::<Option<Str>>()? {
                    Some(s) => number(&s).map(AttributeValue::N),
                    None => continue,
                },
                "B" => match m.next_value::<Option<Blob>>()? {
                    Some(b) => Ok(AttributeValue::B(b.0)),
                    None => continue,
                },
                "BOOL" => match m.next_value::<Option<Flag>>()? {
                    Some(b) => Ok(AttributeValue::Bool(b.0)),
                    None => continue,
                },
                "NULL" => match m.next_value::<Option<Flag>>()? {
                    Some(Flag(true)) => Ok(AttributeValue::Null),
                    Some(Flag(false)) => Err(invalid_value(
                        "Null attribute value types must have the value of true",
                    )),
                    None => continue,
                },
                "M" => match m.next_value_seed(OptSeed(MapSeed { depth: deeper }))? {
                    Some(r) => r,
                    None => continue,
                },
                "L" => match m.next_value_seed(OptSeed(ListSeed { depth: deeper }))? {
                    Some(r) => r,
                    None => continue,
                },
                "SS" => match m.next_value::<Option<List<Str>>>()? {
                    Some(l) => {
                        let items: Vec<String> = l.0.into_iter().map(|s| s.0).collect();
                        checked_set("string", items, |s| s.clone(), AttributeValue::Ss)
                    }
                    None => continue,
                },
                "NS" => match m.next_value::<Option<List<Str>>>()? {
                    Some(l) => {
                        l.0.iter()
                            .map(|s| number(s))
                            .collect::<Result<Vec<_>, _>>()
                            .and_then(|ns| {
                                checked_set("number", ns, |n| n.to_string(), AttributeValue::Ns)
                            })
                    }
                    None => continue,
                },
                "BS" => match m.next_value::<Option<List<Blob>>>()? {
                    Some(l) => {
                        let items: Vec<Vec<u8>> = l.0.into_iter().map(|b| b.0).collect();
                        checked_set(
                            "binary",
                            items,
                            |b| base64::engine::general_purpose::STANDARD.encode(b),
                            AttributeValue::Bs,
                        )
                    }
                    None => continue,
                },
                // Members DynamoDB's AttributeValue does not have are ignored.
                _ => {
                    m.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            members.push(v);
        }
        if self.depth > MAX_NESTING_DEPTH {
            return Ok(WireValue(Err(invalid_value(NESTING_MESSAGE))));
        }
        Ok(WireValue(match members.set.len() {
            0 => Err("Supplied AttributeValue is empty, must contain exactly one of the supported datatypes".into()),
            1 => match members.invalid {
                Some(e) => Err(e),
                None => members.set.pop().ok_or_else(String::new),
            },
            _ => Err(members.invalid.unwrap_or_else(|| {
                "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes".into()
            })),
        }))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<WireValue, A::Error> {
        Err(de::Error::custom(
            "Unrecognized collection type class com.amazonaws.dynamodb.v20120810.AttributeValue",
        ))
    }
    reject_all_scalars!("Unexpected value type in payload");
}

/// `null` or the inner seed's value.
struct OptSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for OptSeed<S> {
    type Value = Option<S::Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V<S>(S);
        impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for V<S> {
            type Value = Option<S::Value>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value or null")
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                self.0.deserialize(d).map(Some)
            }
        }
        d.deserialize_option(V(self.0))
    }
}

/// The value of `M`: a map of attribute values one level deeper.
struct MapSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for MapSeed {
    type Value = Result<AttributeValue, String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let w = d.deserialize_any(ItemVisitor { depth: self.depth })?;
        Ok(match w.invalid {
            Some((_, e)) => Err(e),
            None => Ok(AttributeValue::M(w.item)),
        })
    }
}

/// The value of `L`: a list of attribute values one level deeper.
struct ListSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ListSeed {
    type Value = Result<AttributeValue, String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ListSeed {
    type Value = Result<AttributeValue, String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of attribute values")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        let mut invalid = None;
        while let Some(WireValue(v)) = s.next_element_seed(ValueSeed { depth: self.depth })? {
            match v {
                Ok(v) => out.push(v),
                Err(e) => {
                    invalid.get_or_insert(e);
                }
            }
        }
        Ok(match invalid {
            Some(e) => Err(e),
            None => Ok(AttributeValue::L(out)),
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom(STRUCTURE_NOT_EXPECTED))
    }
    reject_all_scalars!("Unexpected field type");
}

/// Reads a request body of shape `T` from JSON text: a serialization
/// error carries DynamoDB's message; malformed JSON carries none, as
/// DynamoDB sends none. An empty body is malformed too.
pub fn from_body<T: de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ModelError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed =
        <Obj<T> as de::Deserialize>::deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    parsed.map(|o| o.0).map_err(|e| {
        if e.is_data() {
            ModelError::Serialization(strip_position(&e))
        } else {
            ModelError::Serialization(String::new())
        }
    })
}

/// serde_json appends the position to a data error; DynamoDB does not.
fn strip_position(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match full.strip_suffix(&suffix) {
        Some(m) => m.to_string(),
        None => full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    // Some members are only deserialized, for their error messages.
    #[allow(dead_code)]
    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "PascalCase")]
    struct Shape {
        table_name: Option<Str>,
        limit: Option<Int>,
        consistent_read: Option<Flag>,
        item: Option<WireItem>,
        names: Option<Dict<Str>>,
        list: Option<List<Str>>,
    }

    fn err(body: &str) -> String {
        match from_body::<Shape>(body.as_bytes()) {
            Err(ModelError::Serialization(m)) => m,
            other => panic!("expected a serialization error for {body}, got {other:?}"),
        }
    }

    #[test]
    fn wrong_json_kinds_get_dynamodbs_messages() {
        assert_eq!(
            err(r#"{"TableName": 3}"#),
            "NUMBER_VALUE cannot be converted to String"
        );
        assert_eq!(
            err(r#"{"TableName": 3.5}"#),
            "DECIMAL_VALUE cannot be converted to String"
        );
        assert_eq!(
            err(r#"{"TableName": true}"#),
            "TRUE_VALUE cannot be converted to String"
        );
        assert_eq!(err(r#"{"TableName": {}}"#), STRUCTURE_NOT_EXPECTED);
        assert_eq!(
            err(r#"{"TableName": []}"#),
            "Unrecognized collection type class java.lang.String"
        );
        assert_eq!(
            err(r#"{"Limit": "3"}"#),
            "STRING_VALUE cannot be converted to Integer"
        );
        assert_eq!(
            err(r#"{"ConsistentRead": 1}"#),
            "NUMBER_VALUE cannot be converted to Boolean"
        );
        assert_eq!(err(r#"{"List": "a"}"#), "Unexpected field type");
        assert_eq!(err(r#"{"Names": 1}"#), "Unexpected field type");
        assert_eq!(
            err(r#"{"Item": {"a": "x"}}"#),
            "Unexpected value type in payload"
        );
        assert_eq!(
            err(r#"{"Item": {"a": {"N": 3}}}"#),
            "NUMBER_VALUE cannot be converted to String"
        );
        assert_eq!(
            err(r#"{"Item": {"a": {"B": "abc"}}}"#),
            "Base64 encoded length is expected a multiple of 4 bytes but found: 3"
        );
        // Malformed JSON: no message, as DynamoDB.
        assert_eq!(err(r#"{"TableName": "#), "");
        assert_eq!(err(r#"{} x"#), "");
    }

    #[test]
    fn booleans_accept_dynamodbs_strings_and_nulls_are_absent() {
        let s: Shape = from_body(br#"{"ConsistentRead": "yes", "TableName": null}"#).unwrap();
        assert_eq!(s.consistent_read, Some(Flag(true)));
        assert!(s.table_name.is_none());
        let empty = from_body::<Shape>(b"  ").map(|_| ()).unwrap_err();
        assert_eq!(empty, ModelError::Serialization(String::new()));
    }

    #[test]
    fn attribute_value_rules_wait_for_the_validation_pass() {
        let cases = [
            (
                r#"{"a": {}}"#,
                "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes",
            ),
            (
                r#"{"a": {"dog": "cat"}}"#,
                "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes",
            ),
            (
                r#"{"a": {"S": "x", "N": "1"}}"#,
                "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes",
            ),
            (
                r#"{"a": {"SS": []}}"#,
                "One or more parameter values were invalid: An string set  may not be empty",
            ),
            (
                r#"{"a": {"BS": []}}"#,
                "One or more parameter values were invalid: Binary sets should not be empty",
            ),
            (
                r#"{"a": {"NULL": false}}"#,
                "One or more parameter values were invalid: Null attribute value types must have the value of true",
            ),
            (
                r#"{"a": {"L": [{"M": {"b": {"SS": ["x", "x"]}}}]}}"#,
                "One or more parameter values were invalid: Input collection [x, x] contains duplicates.",
            ),
        ];
        for (item, msg) in cases {
            let body = format!(r#"{{"Item": {item}}}"#);
            let s: Shape = from_body(body.as_bytes()).unwrap();
            let got = s.item.unwrap().into_item().unwrap_err();
            assert_eq!(got, ModelError::Validation(msg.into()), "{item}");
        }
    }

    #[test]
    fn items_decode_like_the_json_tree_path() {
        let text = r#"{"s": {"S": ""}, "n": {"N": "1.50"}, "b": {"B": "AAE="}, "t": {"BOOL": true},
            "z": {"NULL": true}, "l": {"L": [{"S": "x"}, {"NULL": true}]}, "ss": {"SS": ["a", "b"]},
            "ns": {"NS": ["1", "2"]}, "bs": {"BS": ["AA=="]}, "m": {"M": {"k": {"N": "-0"}}}}"#;
        let body = format!(r#"{{"Item": {text}}}"#);
        let s: Shape = from_body(body.as_bytes()).unwrap();
        let wire = s.item.unwrap().into_item().unwrap();
        let tree = crate::value::item_from_json(&serde_json::from_str(text).unwrap()).unwrap();
        assert_eq!(wire, tree);
    }

    #[test]
    fn a_repeated_map_key_keeps_its_place_and_last_value() {
        let s: Shape = from_body(br##"{"Names": {"#a": "x", "#b": "y", "#a": "z"}}"##).unwrap();
        let dict = s.names.unwrap();
        let names: Vec<(&str, &str)> = dict.iter().map(|(k, v)| (k.as_str(), &**v)).collect();
        assert_eq!(names, [("#a", "z"), ("#b", "y")]);
    }

    #[test]
    fn an_item_of_invalid_values_is_not_empty() {
        let s: Shape = from_body(br#"{"Item": {"a": {"N": "1e999"}}}"#).unwrap();
        let item = s.item.unwrap();
        assert_eq!(item.len(), 1);
        assert!(!item.is_empty());
        assert_eq!(item.first_invalid().map(|(k, _)| k), Some("a"));
    }

    #[test]
    fn nesting_beyond_the_limit_is_a_validation_error() {
        let mut v = String::from(r#"{"S": "x"}"#);
        for _ in 0..=MAX_NESTING_DEPTH {
            v = format!(r#"{{"L": [{v}]}}"#);
        }
        let body = format!(r#"{{"Item": {{"a": {v}}}}}"#);
        let s: Shape = from_body(body.as_bytes()).unwrap();
        let got = s.item.unwrap().into_item().unwrap_err().to_string();
        assert!(got.contains("Nesting Levels"), "{got}");
    }
}
