//! Key schemas and the order-preserving storage-key encoding.
//!
//! A storage key is `[hash64 BE][partition key][sort key]`, each key value
//! encoded so that comparing the bytes gives DynamoDB's order: strings and
//! binaries bytewise (with `0x00` escaped so a prefix sorts first), numbers
//! numerically. Items of one partition key are contiguous and ordered by
//! sort key; across partition keys the order is the hash order, which is the
//! order Scan returns.

use crate::ModelError;
use crate::number::Number;
use crate::value::{AttrType, AttributeValue, Item};

/// Largest partition-key value, in bytes.
pub const MAX_PARTITION_KEY_BYTES: usize = 2048;
/// Largest sort-key value, in bytes.
pub const MAX_SORT_KEY_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ScalarType {
    S,
    N,
    B,
}

impl ScalarType {
    pub fn descriptor(self) -> &'static str {
        match self {
            ScalarType::S => "S",
            ScalarType::N => "N",
            ScalarType::B => "B",
        }
    }
    pub fn from_descriptor(s: &str) -> Option<ScalarType> {
        match s {
            "S" => Some(ScalarType::S),
            "N" => Some(ScalarType::N),
            "B" => Some(ScalarType::B),
            _ => None,
        }
    }
    pub fn attr_type(self) -> AttrType {
        match self {
            ScalarType::S => AttrType::S,
            ScalarType::N => AttrType::N,
            ScalarType::B => AttrType::B,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyAttr {
    pub name: String,
    pub ty: ScalarType,
}

/// Most attributes a global secondary index's partition key, and its sort
/// key, may each be made of (multi-attribute keys).
pub const MAX_KEY_ATTRIBUTES_PER_ROLE: usize = 4;

/// The primary key of a table or an index: its partition-key (HASH)
/// attributes and its sort-key (RANGE) attributes, each in key-schema
/// order. A table or a local index has one partition-key attribute and at
/// most one sort-key attribute; a global index may have up to
/// [`MAX_KEY_ATTRIBUTES_PER_ROLE`] of each (a multi-attribute key).
///
/// A multi-attribute key behaves as the tuple of its values: the partition
/// hash covers all partition-key values, and items of one partition sort
/// by the first sort-key attribute, then the second, and so on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "KeySchemaRepr")]
pub struct KeySchema {
    pub hash: Vec<KeyAttr>,
    pub range: Vec<KeyAttr>,
}

/// What a stored or sent [`KeySchema`] may look like: today's lists, or
/// the single attributes that commands and catalogs written before
/// multi-attribute keys hold.
#[derive(serde::Deserialize)]
struct KeySchemaRepr {
    hash: OneOrMany<KeyAttr>,
    #[serde(default)]
    range: Option<OneOrMany<KeyAttr>>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v,
        }
    }
}

impl TryFrom<KeySchemaRepr> for KeySchema {
    type Error = String;
    fn try_from(r: KeySchemaRepr) -> Result<KeySchema, String> {
        let hash = r.hash.into_vec();
        let range = r.range.map(OneOrMany::into_vec).unwrap_or_default();
        if hash.is_empty() || hash.len() > MAX_KEY_ATTRIBUTES_PER_ROLE {
            return Err(format!("a key schema has {} HASH attributes", hash.len()));
        }
        if range.len() > MAX_KEY_ATTRIBUTES_PER_ROLE {
            return Err(format!("a key schema has {} RANGE attributes", range.len()));
        }
        Ok(KeySchema { hash, range })
    }
}

impl KeySchema {
    /// A key of one partition-key attribute and at most one sort-key
    /// attribute (every table and local index).
    pub fn simple(hash: KeyAttr, range: Option<KeyAttr>) -> KeySchema {
        KeySchema {
            hash: vec![hash],
            range: range.into_iter().collect(),
        }
    }

    /// Whether the partition key or the sort key has more than one attribute.
    pub fn is_multi_attribute(&self) -> bool {
        self.hash.len() > 1 || self.range.len() > 1
    }

    pub fn is_key_attr(&self, name: &str) -> bool {
        self.key_attrs().any(|ka| ka.name == name)
    }

    /// Partition-key attributes, then sort-key attributes.
    pub fn key_attrs(&self) -> impl Iterator<Item = &KeyAttr> {
        self.hash.iter().chain(self.range.iter())
    }

    /// Extracts and validates the key of an item being written (PutItem).
    pub fn validate_item_key(&self, item: &Item) -> Result<(), ModelError> {
        for ka in self.key_attrs() {
            let v = item
                .get(&ka.name)
                .ok_or_else(|| invalid(format!("Missing the key {} in the item", ka.name)))?;
            check_key_value(ka, v)?;
        }
        check_key_sizes(self, item)
    }

    /// Validates a `Key` parameter (GetItem, DeleteItem, UpdateItem): exactly
    /// the key attributes with the right types.
    pub fn validate_key(&self, key: &Item) -> Result<(), ModelError> {
        let expected = self.key_attrs().count();
        let mismatch =
            || ModelError::Validation("The provided key element does not match the schema".into());
        if key.len() != expected {
            return Err(mismatch());
        }
        for ka in self.key_attrs() {
            let v = key.get(&ka.name).ok_or_else(mismatch)?;
            if v.attr_type() != ka.ty.attr_type() {
                return Err(mismatch());
            }
            check_key_value(ka, v)?;
        }
        check_key_sizes(self, key)
    }

    /// Whether the key's values in `item` fit DynamoDB's limits: the
    /// partition-key values together at most [`MAX_PARTITION_KEY_BYTES`],
    /// the sort-key values together at most [`MAX_SORT_KEY_BYTES`].
    pub fn check_sizes(&self, item: &Item) -> Result<(), ModelError> {
        check_key_sizes(self, item)
    }

    /// The key attributes of an item, as a new map.
    pub fn key_of(&self, item: &Item) -> Item {
        self.key_attrs()
            .filter_map(|ka| item.get(&ka.name).map(|v| (ka.name.clone(), v.clone())))
            .collect()
    }

    /// Storage key of an item whose key has been validated. Returns `None`
    /// when a key attribute is missing or not a scalar.
    pub fn storage_key(&self, item: &Item) -> Option<Vec<u8>> {
        let hash = self
            .hash
            .iter()
            .map(|ka| item.get(&ka.name))
            .collect::<Option<Vec<_>>>()?;
        let mut out = self.partition_prefix(&hash)?;
        for ka in &self.range {
            encode_scalar(item.get(&ka.name)?, &mut out)?;
        }
        Some(out)
    }

    /// The storage-key prefix shared by every item of one partition-key
    /// value: the hash of the encoded values, then the encoded values.
    /// `values` are the partition-key attributes' values in key-schema
    /// order; `None` when there are not as many as attributes, or one is
    /// not a scalar.
    pub fn partition_prefix(&self, values: &[&AttributeValue]) -> Option<Vec<u8>> {
        if values.len() != self.hash.len() {
            return None;
        }
        let mut encoded = Vec::with_capacity(32);
        for v in values {
            encode_scalar(v, &mut encoded)?;
        }
        let mut out = Vec::with_capacity(8 + encoded.len());
        out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&encoded).to_be_bytes());
        out.extend_from_slice(&encoded);
        Some(out)
    }
}

fn invalid(msg: String) -> ModelError {
    ModelError::Validation(format!("One or more parameter values were invalid: {msg}"))
}

fn check_key_value(ka: &KeyAttr, v: &AttributeValue) -> Result<(), ModelError> {
    if v.attr_type() != ka.ty.attr_type() {
        return Err(invalid(format!(
            "Type mismatch for key {} expected: {} actual: {}",
            ka.name,
            ka.ty.descriptor(),
            v.attr_type()
        )));
    }
    let empty = match v {
        AttributeValue::S(s) => s.is_empty(),
        AttributeValue::B(b) => b.is_empty(),
        _ => false,
    };
    if empty {
        let what = if ka.ty == ScalarType::S {
            "string"
        } else {
            "binary"
        };
        return Err(ModelError::Validation(format!(
            "One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain an empty {what} value. Key: {}",
            ka.name
        )));
    }
    Ok(())
}

fn check_key_sizes(schema: &KeySchema, item: &Item) -> Result<(), ModelError> {
    let size = |attrs: &[KeyAttr]| -> usize {
        attrs
            .iter()
            .filter_map(|ka| item.get(&ka.name))
            .map(AttributeValue::size_bytes)
            .sum()
    };
    if size(&schema.hash) > MAX_PARTITION_KEY_BYTES {
        return Err(invalid(format!(
            "Size of hashkey has exceeded the maximum size limit of{MAX_PARTITION_KEY_BYTES} bytes"
        )));
    }
    if size(&schema.range) > MAX_SORT_KEY_BYTES {
        return Err(invalid(format!(
            "Aggregated size of all range keys has exceeded the size limit of {MAX_SORT_KEY_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Appends the order-preserving encoding of a scalar key value. Returns
/// `None` for non-scalar values.
pub fn encode_scalar(v: &AttributeValue, out: &mut Vec<u8>) -> Option<()> {
    match v {
        AttributeValue::S(s) => {
            out.push(0x01);
            encode_bytes(s.as_bytes(), out);
        }
        AttributeValue::B(b) => {
            out.push(0x03);
            encode_bytes(b, out);
        }
        AttributeValue::N(n) => {
            out.push(0x02);
            encode_number(n, out);
        }
        _ => return None,
    }
    Some(())
}

/// Bytes with `0x00` escaped as `0x00 0xFF` and terminated by `0x00 0x00`,
/// so that the encoding of a prefix sorts before its extensions.
fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    for &c in b {
        out.push(c);
        if c == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, 0x00]);
}

/// Sign byte, then (for non-zero) the exponent shifted into one byte and the
/// digits as `1..=10`, terminated by 0; every byte inverted for negatives.
fn encode_number(n: &Number, out: &mut Vec<u8>) {
    if n.is_zero() {
        out.push(0x80);
        return;
    }
    let neg = n.is_negative();
    let start = out.len();
    let shifted = n.exponent() - crate::number::MIN_NUMBER_EXPONENT;
    out.push(u8::try_from(shifted).unwrap_or(u8::MAX));
    for d in n.digits().bytes() {
        out.push(d - b'0' + 1);
    }
    out.push(0);
    if neg {
        for b in &mut out[start..] {
            *b = !*b;
        }
        out.insert(start, 0x7F);
    } else {
        out.insert(start, 0x81);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: AttributeValue) -> Vec<u8> {
        let mut out = vec![];
        encode_scalar(&v, &mut out).unwrap();
        out
    }

    #[test]
    fn numbers_sort_numerically() {
        let vals = [
            "-1e125",
            "-100",
            "-10",
            "-1.5",
            "-1",
            "-0.5",
            "-1e-130",
            "0",
            "1e-130",
            "0.5",
            "1",
            "1.5",
            "10",
            "100",
            "9.9999999999999999999999999999999999999e125",
        ];
        let encoded: Vec<Vec<u8>> = vals
            .iter()
            .map(|s| enc(AttributeValue::N(Number::parse(s).unwrap())))
            .collect();
        for w in encoded.windows(2) {
            assert!(w[0] < w[1], "{:?} !< {:?}", w[0], w[1]);
        }
    }

    fn attr(name: &str, ty: ScalarType) -> KeyAttr {
        KeyAttr {
            name: name.into(),
            ty,
        }
    }

    #[test]
    fn schemas_stored_before_multi_attribute_keys_still_load() {
        let old = r#"{"hash":{"name":"p","ty":"S"},"range":{"name":"c","ty":"N"}}"#;
        let s: KeySchema = serde_json::from_str(old).unwrap();
        assert_eq!(
            s,
            KeySchema::simple(attr("p", ScalarType::S), Some(attr("c", ScalarType::N)))
        );
        let hash_only: KeySchema =
            serde_json::from_str(r#"{"hash":{"name":"p","ty":"S"},"range":null}"#).unwrap();
        assert!(hash_only.range.is_empty());
        let round = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<KeySchema>(&round).unwrap(), s);
        assert!(serde_json::from_str::<KeySchema>(r#"{"hash":[],"range":[]}"#).is_err());
    }

    #[test]
    fn multi_attribute_keys_sort_as_tuples_within_one_partition() {
        let s = KeySchema {
            hash: vec![attr("h1", ScalarType::S), attr("h2", ScalarType::N)],
            range: vec![attr("r1", ScalarType::N), attr("r2", ScalarType::S)],
        };
        let item = |r1: &str, r2: &str| -> Item {
            [
                ("h1", AttributeValue::S("a".into())),
                ("h2", AttributeValue::N(Number::parse("7").unwrap())),
                ("r1", AttributeValue::N(Number::parse(r1).unwrap())),
                ("r2", AttributeValue::S(r2.into())),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
        };
        let keys: Vec<Vec<u8>> = [("5", "z"), ("50", ""), ("50", "a"), ("100", "a")]
            .iter()
            .map(|(a, b)| s.storage_key(&item(a, b)).unwrap())
            .collect();
        for w in keys.windows(2) {
            assert!(w[0] < w[1]);
            assert_eq!(w[0][..8], w[1][..8], "one partition-key value, one hash");
        }
        let mut missing = item("1", "a");
        missing.remove("r2");
        assert_eq!(
            s.storage_key(&missing),
            None,
            "sparse: every key attribute needed"
        );
    }

    #[test]
    fn a_one_attribute_partition_hash_is_the_hash_of_its_encoding() {
        // The hash stored keys were placed by before multi-attribute keys.
        let s = KeySchema::simple(attr("p", ScalarType::S), None);
        let v = AttributeValue::S("x".into());
        let prefix = s.partition_prefix(&[&v]).unwrap();
        let encoded = enc(v);
        assert_eq!(
            prefix[..8],
            xxhash_rust::xxh3::xxh3_64(&encoded).to_be_bytes()
        );
        assert_eq!(prefix[8..], encoded[..]);
    }

    #[test]
    fn strings_sort_bytewise_with_prefixes_first() {
        let vals = ["", "\0", "\0\0", "a", "a\0", "ab", "b", "é"];
        let encoded: Vec<Vec<u8>> = vals
            .iter()
            .map(|s| enc(AttributeValue::S(s.to_string())))
            .collect();
        for w in encoded.windows(2) {
            assert!(w[0] < w[1]);
        }
    }
}
