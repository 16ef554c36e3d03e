//! Items in Amazon Ion text, as DynamoDB's ION exports write them and its
//! imports read them: one `$ion_1_0 {Item:{...}}` per line; S as a string,
//! N as a decimal, B as a blob, BOOL, NULL as `null`, L as a list, M as a
//! struct, and the sets as lists annotated `$dynamodb_SS`, `$dynamodb_NS`
//! and `$dynamodb_BS`.
//!
//! Writing is plain text (escaped as JSON escapes strings, which Ion
//! reads the same); reading is Amazon's `ion-rs`, through DynamoDB JSON so
//! that an imported item is validated exactly as a request's item is.

use base64::Engine as _;
use dynaraft_model::Item;
use dynaraft_model::value::{AttributeValue, item_from_json};
use ion_rs::{Element, IonType, Value as Ion};
use serde_json::{Map, Value, json};

/// One line of an ION export: `$ion_1_0 {Item:{...}}`.
pub fn item_line(item: &Item) -> String {
    let mut out = String::from("$ion_1_0 {Item:");
    write_struct(item.iter(), &mut out);
    out.push('}');
    out
}

/// One line of an incremental ION export: the change's time, the item's
/// keys, and its new and old images (each absent when there is none).
pub fn change_line(ts_ms: u64, keys: &Item, new: Option<&Item>, old: Option<&Item>) -> String {
    let mut out = format!(
        "$ion_1_0 {{Metadata:{{WriteTimestampMicros:{}}},Keys:",
        ts_ms.saturating_mul(1000)
    );
    write_struct(keys.iter(), &mut out);
    for (name, image) in [("NewImage", new), ("OldImage", old)] {
        if let Some(image) = image {
            out.push(',');
            out.push_str(name);
            out.push(':');
            write_struct(image.iter(), &mut out);
        }
    }
    out.push('}');
    out
}

fn write_struct<'a>(
    fields: impl Iterator<Item = (&'a String, &'a AttributeValue)>,
    out: &mut String,
) {
    out.push('{');
    for (i, (name, value)) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_symbol(name, out);
        out.push(':');
        write_value(value, out);
    }
    out.push('}');
}

/// A field name: bare when it is an identifier Ion does not reserve, else
/// a quoted symbol.
fn write_symbol(name: &str, out: &mut String) {
    let bare = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        && !matches!(name, "null" | "true" | "false" | "nan")
        && !name.starts_with('$');
    if bare {
        out.push_str(name);
        return;
    }
    out.push('\'');
    for c in name.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
}

fn write_string(s: &str, out: &mut String) {
    out.push_str(&Value::String(s.to_string()).to_string());
}

/// A DynamoDB number as an Ion decimal: `103.`, `1.5`, `-2d3`.
fn write_number(n: &str, out: &mut String) {
    let (mantissa, exp) = match n.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (n, None),
    };
    out.push_str(mantissa);
    match exp {
        Some(e) => {
            out.push('d');
            out.push_str(e.trim_start_matches('+'));
        }
        None if !mantissa.contains('.') => out.push('.'),
        None => {}
    }
}

fn write_blob(b: &[u8], out: &mut String) {
    out.push_str("{{");
    out.push_str(&base64::engine::general_purpose::STANDARD.encode(b));
    out.push_str("}}");
}

fn write_value(v: &AttributeValue, out: &mut String) {
    match v {
        AttributeValue::S(s) => write_string(s, out),
        AttributeValue::N(n) => write_number(&n.to_string(), out),
        AttributeValue::B(b) => write_blob(b, out),
        AttributeValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        AttributeValue::Null => out.push_str("null"),
        AttributeValue::M(m) => write_struct(m.iter(), out),
        AttributeValue::L(l) => write_list(l.iter(), out, write_value),
        AttributeValue::Ss(ss) => {
            out.push_str("$dynamodb_SS::");
            write_list(ss.iter(), out, |s, o| write_string(s, o));
        }
        AttributeValue::Ns(ns) => {
            out.push_str("$dynamodb_NS::");
            write_list(ns.iter(), out, |n, o| write_number(&n.to_string(), o));
        }
        AttributeValue::Bs(bs) => {
            out.push_str("$dynamodb_BS::");
            write_list(bs.iter(), out, |b, o| write_blob(b, o));
        }
    }
}

fn write_list<T>(items: impl Iterator<Item = T>, out: &mut String, each: impl Fn(T, &mut String)) {
    out.push('[');
    for (i, x) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        each(x, out);
    }
    out.push(']');
}

/// The item of one line of an ION data file (`$ion_1_0 {Item:{...}}`, the
/// version marker optional); `None` when the line is not one.
pub fn line_item(line: &str) -> Option<Item> {
    let values = Element::read_all(line.as_bytes()).ok()?;
    let mut values = values.iter();
    let top = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let item = top.as_struct()?.get("Item")?;
    item_from_json(to_json(item)?.get("M")?).ok()
}

/// An Ion value as DynamoDB JSON (`{"S": ...}`), by DynamoDB's mapping.
fn to_json(e: &Element) -> Option<Value> {
    let set = e.annotations().first();
    if let Some(kind) = set {
        let list = e.as_sequence()?;
        return match kind {
            "$dynamodb_SS" => Some(
                json!({"SS": list.iter().map(|x| x.as_string().map(str::to_string)).collect::<Option<Vec<_>>>()?}),
            ),
            "$dynamodb_NS" => {
                Some(json!({"NS": list.iter().map(number).collect::<Option<Vec<_>>>()?}))
            }
            "$dynamodb_BS" => {
                Some(json!({"BS": list.iter().map(blob).collect::<Option<Vec<_>>>()?}))
            }
            _ => None,
        };
    }
    if e.is_null() {
        return (e.ion_type() == IonType::Null).then(|| json!({"NULL": true}));
    }
    Some(match e.value() {
        Ion::String(s) => json!({"S": s.text()}),
        Ion::Bool(b) => json!({"BOOL": b}),
        Ion::Int(_) | Ion::Decimal(_) | Ion::Float(_) => json!({"N": number(e)?}),
        Ion::Blob(_) => json!({"B": blob(e)?}),
        Ion::List(l) => json!({"L": l.iter().map(to_json).collect::<Option<Vec<_>>>()?}),
        Ion::Struct(s) => {
            let mut m = Map::new();
            for (name, v) in s.fields() {
                m.insert(name.text()?.to_string(), to_json(v)?);
            }
            json!({"M": m})
        }
        _ => return None,
    })
}

/// An Ion int, decimal or float as a DynamoDB number string.
fn number(e: &Element) -> Option<String> {
    match e.value() {
        Ion::Int(i) => Some(i.to_string()),
        Ion::Decimal(d) => {
            let text = d.to_string().replace(['d', 'D'], "e");
            Some(match text.split_once('e') {
                Some((m, x)) => format!("{}e{x}", m.trim_end_matches('.')),
                None => text.trim_end_matches('.').to_string(),
            })
        }
        Ion::Float(f) if f.is_finite() => Some(f.to_string()),
        _ => None,
    }
}

fn blob(e: &Element) -> Option<String> {
    e.as_blob()
        .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynaraft_model::value::item_from_json;

    #[test]
    fn every_type_goes_to_ion_text_and_back_unchanged() {
        let json = json!({
            "pk": {"S": "a \"quoted\"\n ünï"},
            "n": {"N": "103"}, "f": {"N": "-1.5"}, "big": {"N": "12345678901234567890e-3"},
            "tiny": {"N": "1E-130"}, "zero": {"N": "0"},
            "b": {"B": "AAEC/w=="}, "t": {"BOOL": true}, "nil": {"NULL": true},
            "ss": {"SS": ["x", "y"]}, "ns": {"NS": ["1", "2.5"]}, "bs": {"BS": ["AQ==", "Ag=="]},
            "l": {"L": [{"S": "x"}, {"N": "2"}, {"NULL": true}, {"L": []}]},
            "m": {"M": {"inner key": {"M": {"null": {"BOOL": false}}}, "$x": {"S": ""}}},
            "it's": {"S": "quoted symbol"},
        });
        let item = item_from_json(&json).unwrap();
        let line = item_line(&item);
        assert!(line.starts_with("$ion_1_0 {Item:{"), "{line}");
        assert_eq!(line_item(&line), Some(item.clone()), "{line}");
        // The version marker is optional.
        let bare = line.trim_start_matches("$ion_1_0 ");
        assert_eq!(line_item(bare), Some(item));
    }

    #[test]
    fn lines_that_are_not_items_are_refused() {
        for bad in [
            "",
            "not ion {",
            "{Other:{}}",
            "{Item:{pk:2020-01-01T00:00Z}}",
            "{Item:{s:$dynamodb_SS::[1]}}",
            "{Item:{a:\"x\"}} {Item:{b:\"y\"}}",
        ] {
            assert_eq!(line_item(bad), None, "{bad}");
        }
    }
}
