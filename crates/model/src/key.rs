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

/// The primary key of a table (or an index).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeySchema {
    pub hash: KeyAttr,
    pub range: Option<KeyAttr>,
}

impl KeySchema {
    pub fn is_key_attr(&self, name: &str) -> bool {
        self.hash.name == name || self.range.as_ref().is_some_and(|r| r.name == name)
    }

    pub fn key_attrs(&self) -> impl Iterator<Item = &KeyAttr> {
        std::iter::once(&self.hash).chain(self.range.iter())
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

    /// The key attributes of an item, as a new map.
    pub fn key_of(&self, item: &Item) -> Item {
        self.key_attrs()
            .filter_map(|ka| item.get(&ka.name).map(|v| (ka.name.clone(), v.clone())))
            .collect()
    }

    /// Storage key of an item whose key has been validated. Returns `None`
    /// when a key attribute is missing or mistyped.
    pub fn storage_key(&self, item: &Item) -> Option<Vec<u8>> {
        let pk = item.get(&self.hash.name)?;
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&partition_hash(pk)?.to_be_bytes());
        encode_scalar(pk, &mut out)?;
        if let Some(r) = &self.range {
            encode_scalar(item.get(&r.name)?, &mut out)?;
        }
        Some(out)
    }

    /// The storage-key prefix shared by every item of one partition key.
    pub fn partition_prefix(&self, pk: &AttributeValue) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(32);
        out.extend_from_slice(&partition_hash(pk)?.to_be_bytes());
        encode_scalar(pk, &mut out)?;
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
    if item.get(&schema.hash.name).map_or(0, |v| v.size_bytes()) > MAX_PARTITION_KEY_BYTES {
        return Err(invalid(format!(
            "Size of hashkey has exceeded the maximum size limit of{MAX_PARTITION_KEY_BYTES} bytes"
        )));
    }
    if let Some(r) = &schema.range
        && item.get(&r.name).map_or(0, |v| v.size_bytes()) > MAX_SORT_KEY_BYTES
    {
        return Err(invalid(format!(
            "Aggregated size of all range keys has exceeded the size limit of {MAX_SORT_KEY_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The 64-bit hash that places a partition-key value on the hash ring.
pub fn partition_hash(pk: &AttributeValue) -> Option<u64> {
    let mut buf = Vec::with_capacity(32);
    encode_scalar(pk, &mut buf)?;
    Some(xxhash_rust::xxh3::xxh3_64(&buf))
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
