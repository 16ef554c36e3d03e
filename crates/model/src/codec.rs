//! Compact binary encoding of items for storage. Decoding never panics:
//! bytes from disk are checked and a malformed record is an error.

use crate::number::Number;
use crate::value::{AttributeValue, Item};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
#[error("corrupt item encoding: {0}")]
pub struct CodecError(pub &'static str);

pub fn encode_item(item: &Item) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    put_map(item, &mut out);
    out
}

pub fn decode_item(bytes: &[u8]) -> Result<Item, CodecError> {
    let mut r = Reader { b: bytes, depth: 0 };
    let m = r.map()?;
    if !r.b.is_empty() {
        return Err(CodecError("trailing bytes"));
    }
    Ok(m)
}

fn put_len(n: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

fn put_bytes(b: &[u8], out: &mut Vec<u8>) {
    put_len(b.len(), out);
    out.extend_from_slice(b);
}

fn put_map(m: &BTreeMap<String, AttributeValue>, out: &mut Vec<u8>) {
    put_len(m.len(), out);
    for (k, v) in m {
        put_bytes(k.as_bytes(), out);
        put_value(v, out);
    }
}

pub fn put_value(v: &AttributeValue, out: &mut Vec<u8>) {
    match v {
        AttributeValue::S(s) => {
            out.push(1);
            put_bytes(s.as_bytes(), out);
        }
        AttributeValue::N(n) => {
            out.push(2);
            put_bytes(n.to_string().as_bytes(), out);
        }
        AttributeValue::B(b) => {
            out.push(3);
            put_bytes(b, out);
        }
        AttributeValue::Bool(b) => out.extend_from_slice(&[4, *b as u8]),
        AttributeValue::Null => out.push(5),
        AttributeValue::M(m) => {
            out.push(6);
            put_map(m, out);
        }
        AttributeValue::L(l) => {
            out.push(7);
            put_len(l.len(), out);
            l.iter().for_each(|v| put_value(v, out));
        }
        AttributeValue::Ss(v) => {
            out.push(8);
            put_len(v.len(), out);
            v.iter().for_each(|s| put_bytes(s.as_bytes(), out));
        }
        AttributeValue::Ns(v) => {
            out.push(9);
            put_len(v.len(), out);
            v.iter()
                .for_each(|n| put_bytes(n.to_string().as_bytes(), out));
        }
        AttributeValue::Bs(v) => {
            out.push(10);
            put_len(v.len(), out);
            v.iter().for_each(|b| put_bytes(b, out));
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    depth: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.b.len() < n {
            return Err(CodecError("truncated"));
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Ok(head)
    }
    fn byte(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?.first().copied().unwrap_or_default())
    }
    fn len(&mut self) -> Result<usize, CodecError> {
        let b = self.take(4)?;
        let arr: [u8; 4] = b.try_into().map_err(|_| CodecError("truncated"))?;
        let n = u32::from_le_bytes(arr) as usize;
        if n > self.b.len() {
            return Err(CodecError("length beyond record"));
        }
        Ok(n)
    }
    fn bytes(&mut self) -> Result<Vec<u8>, CodecError> {
        let n = self.len()?;
        Ok(self.take(n)?.to_vec())
    }
    fn string(&mut self) -> Result<String, CodecError> {
        String::from_utf8(self.bytes()?).map_err(|_| CodecError("invalid utf-8"))
    }
    fn number(&mut self) -> Result<Number, CodecError> {
        Number::parse(&self.string()?).map_err(|_| CodecError("invalid number"))
    }
    fn map(&mut self) -> Result<BTreeMap<String, AttributeValue>, CodecError> {
        let n = self.len()?;
        let mut m = BTreeMap::new();
        for _ in 0..n {
            let k = self.string()?;
            let v = self.value()?;
            m.insert(k, v);
        }
        Ok(m)
    }
    fn list<T>(
        &mut self,
        f: impl Fn(&mut Self) -> Result<T, CodecError>,
    ) -> Result<Vec<T>, CodecError> {
        let n = self.len()?;
        (0..n).map(|_| f(self)).collect()
    }
    fn value(&mut self) -> Result<AttributeValue, CodecError> {
        self.depth += 1;
        if self.depth > crate::value::MAX_NESTING_DEPTH + 2 {
            return Err(CodecError("nesting too deep"));
        }
        let v = match self.byte()? {
            1 => AttributeValue::S(self.string()?),
            2 => AttributeValue::N(self.number()?),
            3 => AttributeValue::B(self.bytes()?),
            4 => AttributeValue::Bool(self.byte()? != 0),
            5 => AttributeValue::Null,
            6 => AttributeValue::M(self.map()?),
            7 => AttributeValue::L(self.list(|r| r.value())?),
            8 => AttributeValue::Ss(self.list(|r| r.string())?),
            9 => AttributeValue::Ns(self.list(|r| r.number())?),
            10 => AttributeValue::Bs(self.list(|r| r.bytes())?),
            _ => return Err(CodecError("unknown type tag")),
        };
        self.depth -= 1;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let item = crate::value::item_from_json(&serde_json::json!({
            "a": {"M": {"x": {"L": [{"N": "-1.5"}, {"NULL": true}, {"BS": ["AQ=="]}]}}},
            "b": {"SS": ["p", "q"]}, "c": {"BOOL": false}
        }))
        .unwrap();
        let bytes = encode_item(&item);
        assert_eq!(decode_item(&bytes).unwrap(), item);
        for cut in 0..bytes.len() {
            assert!(decode_item(&bytes[..cut]).is_err());
        }
    }
}
