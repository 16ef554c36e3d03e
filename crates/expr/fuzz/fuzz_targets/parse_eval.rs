//! Feeds arbitrary bytes to every expression parser and evaluates whatever
//! parses against a fixed item. Any panic, overflow or hang is a bug: the
//! contract is "a result or a ValidationException".
#![no_main]

use dynaraft_expr::*;
use dynaraft_model::value::item_from_json;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

fn subs() -> Substitutions {
    let values = item_from_json(&serde_json::json!({
        ":v": {"N": "1"}, ":s": {"S": "x"}, ":l": {"L": [{"N": "2"}]}, ":ss": {"SS": ["a"]}
    }))
    .unwrap_or_default();
    let names = BTreeMap::from([("#n".to_string(), "name".to_string()), ("#a".to_string(), "a".to_string())]);
    Substitutions::new(names, values)
}

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    let item = item_from_json(&serde_json::json!({
        "a": {"L": [{"N": "1"}, {"M": {"b": {"S": "x"}}}]}, "name": {"S": "x"}, "n": {"N": "5"},
        "s": {"SS": ["a", "b"]}, "pk": {"S": "k"}, "sk": {"N": "3"}
    }))
    .unwrap_or_default();
    if let Ok(c) = parse_condition(src, ExprKind::Condition, &mut subs()) {
        c.eval(Some(&item));
    }
    if let Ok(u) = parse_update(src, &mut subs()) {
        let mut i = item.clone();
        let _ = u.apply(&mut i);
    }
    if let Ok(p) = parse_projection(src, &mut subs()) {
        projection::project(&item, &p);
    }
    let schema = dynaraft_model::KeySchema::simple(
        dynaraft_model::KeyAttr { name: "pk".into(), ty: dynaraft_model::ScalarType::S },
        Some(dynaraft_model::KeyAttr { name: "sk".into(), ty: dynaraft_model::ScalarType::N }),
    );
    let _ = parse_key_condition(src, &mut subs(), &schema);
});
