//! Attribute values: the ten DynamoDB types, their wire (JSON) form, their
//! validation, and DynamoDB's size arithmetic.

use crate::ModelError;
use crate::number::Number;
use base64::Engine as _;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// Deepest nesting of lists and maps DynamoDB accepts in an item.
pub const MAX_NESTING_DEPTH: usize = 32;
/// DynamoDB's text for a value nested deeper than [`MAX_NESTING_DEPTH`].
pub const NESTING_MESSAGE: &str = "Nesting Levels have exceeded supported limits: Attributes in the item have nested levels beyond supported limit";
/// Overhead bytes of a list or map value.
pub const LIST_MAP_OVERHEAD_BYTES: usize = 3;
/// Overhead bytes per element of a list or map.
pub const LIST_MAP_ELEMENT_OVERHEAD_BYTES: usize = 1;

pub type Item = BTreeMap<String, AttributeValue>;

#[derive(Clone, PartialEq, Eq)]
pub enum AttributeValue {
    S(String),
    N(Number),
    B(Vec<u8>),
    Bool(bool),
    Null,
    M(BTreeMap<String, AttributeValue>),
    L(Vec<AttributeValue>),
    Ss(Vec<String>),
    Ns(Vec<Number>),
    Bs(Vec<Vec<u8>>),
}

/// The type descriptors as they appear on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttrType {
    S,
    N,
    B,
    Bool,
    Null,
    M,
    L,
    Ss,
    Ns,
    Bs,
}

impl AttrType {
    pub fn descriptor(self) -> &'static str {
        match self {
            AttrType::S => "S",
            AttrType::N => "N",
            AttrType::B => "B",
            AttrType::Bool => "BOOL",
            AttrType::Null => "NULL",
            AttrType::M => "M",
            AttrType::L => "L",
            AttrType::Ss => "SS",
            AttrType::Ns => "NS",
            AttrType::Bs => "BS",
        }
    }

    pub fn from_descriptor(s: &str) -> Option<AttrType> {
        Some(match s {
            "S" => AttrType::S,
            "N" => AttrType::N,
            "B" => AttrType::B,
            "BOOL" => AttrType::Bool,
            "NULL" => AttrType::Null,
            "M" => AttrType::M,
            "L" => AttrType::L,
            "SS" => AttrType::Ss,
            "NS" => AttrType::Ns,
            "BS" => AttrType::Bs,
            _ => return None,
        })
    }
}

impl fmt::Display for AttrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.descriptor())
    }
}

impl AttributeValue {
    pub fn attr_type(&self) -> AttrType {
        match self {
            AttributeValue::S(_) => AttrType::S,
            AttributeValue::N(_) => AttrType::N,
            AttributeValue::B(_) => AttrType::B,
            AttributeValue::Bool(_) => AttrType::Bool,
            AttributeValue::Null => AttrType::Null,
            AttributeValue::M(_) => AttrType::M,
            AttributeValue::L(_) => AttrType::L,
            AttributeValue::Ss(_) => AttrType::Ss,
            AttributeValue::Ns(_) => AttrType::Ns,
            AttributeValue::Bs(_) => AttrType::Bs,
        }
    }

    /// Size of the value in bytes, as DynamoDB counts it (without the name).
    pub fn size_bytes(&self) -> usize {
        match self {
            AttributeValue::S(s) => s.len(),
            AttributeValue::N(n) => n.size_bytes(),
            AttributeValue::B(b) => b.len(),
            AttributeValue::Bool(_) | AttributeValue::Null => 1,
            AttributeValue::M(m) => {
                LIST_MAP_OVERHEAD_BYTES
                    + m.iter()
                        .map(|(k, v)| k.len() + v.size_bytes() + LIST_MAP_ELEMENT_OVERHEAD_BYTES)
                        .sum::<usize>()
            }
            AttributeValue::L(l) => {
                LIST_MAP_OVERHEAD_BYTES
                    + l.iter()
                        .map(|v| v.size_bytes() + LIST_MAP_ELEMENT_OVERHEAD_BYTES)
                        .sum::<usize>()
            }
            AttributeValue::Ss(v) => v.iter().map(|s| s.len()).sum(),
            AttributeValue::Ns(v) => v.iter().map(|n| n.size_bytes()).sum(),
            AttributeValue::Bs(v) => v.iter().map(|b| b.len()).sum(),
        }
    }

    /// Parses one attribute value from its DynamoDB JSON form.
    pub fn from_json(v: &Value) -> Result<AttributeValue, ModelError> {
        parse_value(v, 0)
    }

    pub fn to_json(&self) -> Value {
        let b64 = |b: &[u8]| Value::String(base64::engine::general_purpose::STANDARD.encode(b));
        let mut m = Map::with_capacity(1);
        let (k, v) = match self {
            AttributeValue::S(s) => ("S", Value::String(s.clone())),
            AttributeValue::N(n) => ("N", Value::String(n.to_string())),
            AttributeValue::B(b) => ("B", b64(b)),
            AttributeValue::Bool(b) => ("BOOL", Value::Bool(*b)),
            AttributeValue::Null => ("NULL", Value::Bool(true)),
            AttributeValue::M(map) => ("M", item_to_json(map)),
            AttributeValue::L(l) => ("L", Value::Array(l.iter().map(|v| v.to_json()).collect())),
            AttributeValue::Ss(v) => (
                "SS",
                Value::Array(v.iter().map(|s| Value::String(s.clone())).collect()),
            ),
            AttributeValue::Ns(v) => (
                "NS",
                Value::Array(v.iter().map(|n| Value::String(n.to_string())).collect()),
            ),
            AttributeValue::Bs(v) => ("BS", Value::Array(v.iter().map(|b| b64(b)).collect())),
        };
        m.insert(k.to_string(), v);
        Value::Object(m)
    }
}

/// Serde support through the DynamoDB JSON form, so types carrying items
/// (log entries, outcomes) can derive `Serialize`/`Deserialize`. Written
/// straight to the serializer, the same JSON as [`AttributeValue::to_json`]
/// without building its `Value` tree (every write's item is serialized this
/// way into its log entry).
impl serde::Serialize for AttributeValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(1))?;
        match self {
            AttributeValue::S(v) => m.serialize_entry("S", v)?,
            AttributeValue::N(n) => m.serialize_entry("N", &Text(n))?,
            AttributeValue::B(b) => m.serialize_entry("B", &Base64(b))?,
            AttributeValue::Bool(b) => m.serialize_entry("BOOL", b)?,
            AttributeValue::Null => m.serialize_entry("NULL", &true)?,
            AttributeValue::M(map) => m.serialize_entry("M", map)?,
            AttributeValue::L(l) => m.serialize_entry("L", l)?,
            AttributeValue::Ss(v) => m.serialize_entry("SS", v)?,
            AttributeValue::Ns(v) => {
                m.serialize_entry("NS", &v.iter().map(Text).collect::<Vec<_>>())?
            }
            AttributeValue::Bs(v) => {
                m.serialize_entry("BS", &v.iter().map(|b| Base64(b)).collect::<Vec<_>>())?
            }
        }
        m.end()
    }
}

/// A value serialized as the string its `Display` writes.
struct Text<'a, T: fmt::Display>(&'a T);

impl<T: fmt::Display> serde::Serialize for Text<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self.0)
    }
}

/// Bytes serialized as standard base64 text, as the wire carries B and BS.
struct Base64<'a>(&'a [u8]);

impl serde::Serialize for Base64<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&base64::display::Base64Display::new(
            self.0,
            &base64::engine::general_purpose::STANDARD,
        ))
    }
}

impl<'de> serde::Deserialize<'de> for AttributeValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        AttributeValue::from_json(&v).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for AttributeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

/// Item size as DynamoDB counts it: names plus values.
pub fn item_size_bytes(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + v.size_bytes()).sum()
}

pub fn item_to_json(item: &BTreeMap<String, AttributeValue>) -> Value {
    Value::Object(item.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
}

/// Parses a map of attribute values (an item, a key, ExpressionAttributeValues).
pub fn item_from_json(v: &Value) -> Result<Item, ModelError> {
    let obj = v.as_object().ok_or_else(|| {
        ModelError::Serialization("Start of structure or map found where not expected".into())
    })?;
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        out.insert(k.clone(), parse_value(v, 0)?);
    }
    Ok(out)
}

fn invalid(msg: impl Into<String>) -> ModelError {
    ModelError::Validation(format!(
        "One or more parameter values were invalid: {}",
        msg.into()
    ))
}

fn ser(msg: &str) -> ModelError {
    ModelError::Serialization(msg.to_string())
}

fn parse_value(v: &Value, depth: usize) -> Result<AttributeValue, ModelError> {
    if depth > MAX_NESTING_DEPTH {
        return Err(invalid(NESTING_MESSAGE));
    }
    let obj = v
        .as_object()
        .ok_or_else(|| ser("Unexpected value type in payload"))?;
    let mut set: Vec<(&String, &Value)> = obj.iter().filter(|(_, v)| !v.is_null()).collect();
    if set.is_empty() {
        return Err(ModelError::Validation(
            "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes"
                .into(),
        ));
    }
    if set.len() > 1 {
        return Err(ModelError::Validation(
            "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes"
                .into(),
        ));
    }
    let (k, v) = set.remove(0);
    let ty = AttrType::from_descriptor(k)
        .ok_or_else(|| ser(&format!("Unknown attribute value type: {k}")))?;
    Ok(match ty {
        AttrType::S => AttributeValue::S(as_str(v)?.to_string()),
        AttrType::N => AttributeValue::N(parse_number(as_str(v)?)?),
        AttrType::B => AttributeValue::B(parse_b64(v)?),
        AttrType::Bool => AttributeValue::Bool(
            v.as_bool()
                .ok_or_else(|| ser("Unexpected value type in payload"))?,
        ),
        AttrType::Null => match v.as_bool() {
            Some(true) => AttributeValue::Null,
            Some(false) => {
                return Err(invalid(
                    "Null attribute value types must have the value of true",
                ));
            }
            None => return Err(ser("Unexpected value type in payload")),
        },
        AttrType::M => {
            let m = v
                .as_object()
                .ok_or_else(|| ser("Unexpected value type in payload"))?;
            let mut out = BTreeMap::new();
            for (k, v) in m {
                out.insert(k.clone(), parse_value(v, depth + 1)?);
            }
            AttributeValue::M(out)
        }
        AttrType::L => {
            let l = as_array(v)?;
            AttributeValue::L(
                l.iter()
                    .map(|v| parse_value(v, depth + 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        AttrType::Ss => {
            let l = as_array(v)?;
            let items: Vec<String> = l
                .iter()
                .map(|v| as_str(v).map(str::to_string))
                .collect::<Result<_, _>>()?;
            check_set("string", &items, |s| s.clone())?;
            AttributeValue::Ss(items)
        }
        AttrType::Ns => {
            let l = as_array(v)?;
            let items: Vec<Number> = l
                .iter()
                .map(|v| as_str(v).and_then(parse_number))
                .collect::<Result<_, _>>()?;
            check_set("number", &items, |n| n.to_string())?;
            AttributeValue::Ns(items)
        }
        AttrType::Bs => {
            let l = as_array(v)?;
            let items: Vec<Vec<u8>> = l.iter().map(parse_b64).collect::<Result<_, _>>()?;
            check_set("binary", &items, |b| {
                base64::engine::general_purpose::STANDARD.encode(b)
            })?;
            AttributeValue::Bs(items)
        }
    })
}

pub(crate) fn check_set<T: PartialEq + Ord + Clone>(
    kind: &str,
    items: &[T],
    show: impl Fn(&T) -> String,
) -> Result<(), ModelError> {
    if items.is_empty() && kind == "binary" {
        return Err(invalid("Binary sets should not be empty"));
    }
    if items.is_empty() {
        return Err(invalid(format!("An {kind} set  may not be empty")));
    }
    let mut sorted: Vec<&T> = items.iter().collect();
    sorted.sort();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        let shown: Vec<String> = items.iter().map(show).collect();
        return Err(invalid(format!(
            "Input collection [{}] contains duplicates.",
            shown.join(", ")
        )));
    }
    Ok(())
}

fn as_str(v: &Value) -> Result<&str, ModelError> {
    v.as_str()
        .ok_or_else(|| ser("Unexpected value type in payload"))
}

fn as_array(v: &Value) -> Result<&Vec<Value>, ModelError> {
    v.as_array()
        .ok_or_else(|| ser("Unexpected value type in payload"))
}

fn parse_number(s: &str) -> Result<Number, ModelError> {
    Number::parse(s).map_err(|e| ModelError::Validation(e.to_string()))
}

fn parse_b64(v: &Value) -> Result<Vec<u8>, ModelError> {
    let s = as_str(v)?;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| {
            ser("Base64 encoded length is expected a multiple of 4 bytes but found: ")
                .with_len(s.len())
        })
}

impl ModelError {
    fn with_len(self, len: usize) -> ModelError {
        match self {
            ModelError::Serialization(m) => ModelError::Serialization(format!("{m}{len}")),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        AttributeValue::from_json(&v).unwrap_err().to_string()
    }

    #[test]
    fn round_trips_every_type() {
        let v = json!({"M": {
            "s": {"S": ""}, "n": {"N": "1.50"}, "b": {"B": "AAE="}, "t": {"BOOL": true},
            "z": {"NULL": true}, "l": {"L": [{"S": "x"}]}, "ss": {"SS": ["a", "b"]},
            "ns": {"NS": ["1", "2"]}, "bs": {"BS": ["AA=="]}
        }});
        let a = AttributeValue::from_json(&v).unwrap();
        let back = a.to_json();
        assert_eq!(back["M"]["n"], json!({"N": "1.5"}));
        assert_eq!(AttributeValue::from_json(&back).unwrap(), a);
    }

    #[test]
    fn serializes_as_its_json_form_byte_for_byte() {
        let v = json!({"M": {
            "s": {"S": "q\"uote\\ é \u{1}"}, "n": {"N": "-12.5E3"}, "b": {"B": "AAH/"},
            "t": {"BOOL": false}, "z": {"NULL": true},
            "l": {"L": [{"S": "x"}, {"M": {"in": {"NS": ["3", "0.1"]}}}, {"L": []}]},
            "ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1", "-2", "1e10"]}, "bs": {"BS": ["AA==", "/w=="]},
            "e": {"M": {}}
        }});
        let a = AttributeValue::from_json(&v).unwrap();
        let direct = serde_json::to_string(&a).unwrap();
        assert_eq!(direct, serde_json::to_string(&a.to_json()).unwrap());
        let item = item_from_json(&v["M"]).unwrap();
        assert_eq!(
            serde_json::to_string(&item).unwrap(),
            serde_json::to_string(&item_to_json(&item)).unwrap()
        );
        let back: AttributeValue = serde_json::from_str(&direct).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn rejects_bad_values() {
        assert!(err(json!({})).contains("Supplied AttributeValue is empty"));
        assert!(err(json!({"S": "a", "N": "1"})).contains("more than one datatypes"));
        assert!(err(json!({"NULL": false})).contains("must have the value of true"));
        assert_eq!(
            err(json!({"SS": []})),
            "One or more parameter values were invalid: An string set  may not be empty"
        );
        assert_eq!(
            err(json!({"SS": ["a", "a"]})),
            "One or more parameter values were invalid: Input collection [a, a] contains duplicates."
        );
        assert!(err(json!({"NS": ["1", "1.0"]})).contains("contains duplicates"));
        assert!(err(json!({"N": "x"})).contains("cannot be converted to a numeric value: x"));
    }

    #[test]
    fn sizes_follow_the_developer_guide() {
        let item = item_from_json(&json!({
            "id": {"S": "abc"}, "n": {"N": "123"}, "l": {"L": [{"BOOL": true}]}
        }))
        .unwrap();
        // id: 2+3; n: 1+3; l: 1 + 3 + (1+1)
        assert_eq!(item_size_bytes(&item), 5 + 4 + 6);
    }
}
