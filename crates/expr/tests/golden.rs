//! Golden-file tests for the expression language.
//!
//! Each file under `tests/golden/` is a list of cases separated by blank
//! lines. A case sets inputs with `key: value` lines (`condition`, `filter`,
//! `update`, `projection`, `keycondition`, `item`, `names`, `values`,
//! `schema`) and ends with `=> expected`, the result or the exact error.
//! Run with `UPDATE_GOLDEN=1` to rewrite the expectations, then review the
//! diff.

use dynaraft_expr::*;
use dynaraft_model::value::{item_from_json, item_to_json};
use dynaraft_model::{Item, KeyAttr, KeySchema, ScalarType};
use std::collections::BTreeMap;

#[derive(Default)]
struct Case {
    fields: BTreeMap<String, String>,
}

fn json_item(s: Option<&String>) -> Result<Item, String> {
    match s {
        None => Ok(Item::new()),
        Some(s) => {
            let v: serde_json::Value =
                serde_json::from_str(s).map_err(|e| format!("bad json in case: {e}"))?;
            item_from_json(&v).map_err(|e| e.to_string())
        }
    }
}

/// `name type [role], ...`: without roles, the first attribute is the
/// partition key and the second the sort key; with HASH or RANGE given,
/// each attribute takes its role (a multi-attribute key).
fn schema(s: &str) -> KeySchema {
    let mut out = KeySchema {
        hash: Vec::new(),
        range: Vec::new(),
    };
    for (i, p) in s.split(',').enumerate() {
        let mut it = p.split_whitespace();
        let name = it.next().unwrap_or("pk").to_string();
        let ty = ScalarType::from_descriptor(it.next().unwrap_or("S")).unwrap_or(ScalarType::S);
        let role = it.next().unwrap_or(if i == 0 { "HASH" } else { "RANGE" });
        let attr = KeyAttr { name, ty };
        match role {
            "HASH" => out.hash.push(attr),
            _ => out.range.push(attr),
        }
    }
    out
}

fn run(case: &Case) -> String {
    let f = &case.fields;
    let names: BTreeMap<String, String> = f
        .get("names")
        .map(|s| serde_json::from_str(s).expect("names json"))
        .unwrap_or_default();
    let values = match json_item(f.get("values")) {
        Ok(v) => v,
        Err(e) => return format!("error: {e}"),
    };
    let mut item = match json_item(f.get("item")) {
        Ok(v) => v,
        Err(e) => return format!("error: {e}"),
    };
    if let Some(out) = run_legacy(f, &mut item) {
        return out;
    }
    let mut subs = Substitutions::new(names, values);
    let out = if let Some(src) = f.get("condition").or(f.get("filter")) {
        let kind = if f.contains_key("condition") {
            ExprKind::Condition
        } else {
            ExprKind::Filter
        };
        parse_condition(src, kind, &mut subs).map(|c| c.eval(Some(&item)).to_string())
    } else if let Some(src) = f.get("update") {
        parse_update(src, &mut subs).and_then(|u| match u.apply(&mut item) {
            Ok(()) => Ok(item_to_json(&item).to_string()),
            Err(e) => Err(ExprError(e.to_string())),
        })
    } else if let Some(src) = f.get("projection") {
        parse_projection(src, &mut subs)
            .map(|p| item_to_json(&projection::project(&item, &p)).to_string())
    } else if let Some(src) = f.get("keycondition") {
        let s = schema(f.get("schema").map(String::as_str).unwrap_or("pk S"));
        parse_key_condition(src, &mut subs, &s).map(|k| format!("{k:?}"))
    } else {
        return "error: case has no expression".into();
    };
    match out.and_then(|o| subs.check_unused().map(|_| o)) {
        Ok(o) => o,
        Err(e) => format!("error: {e}"),
    }
}

/// Legacy parameters: translate, then parse and evaluate like expressions.
fn run_legacy(f: &BTreeMap<String, String>, item: &mut Item) -> Option<String> {
    let json = |k: &str| {
        f.get(k)
            .map(|s| serde_json::from_str::<serde_json::Value>(s).expect("legacy json"))
    };
    let op = f.get("conditionaloperator").map(String::as_str);
    let mut l = legacy::Legacy::new();
    let (kind, translated) = if let Some(e) = json("expected") {
        ("condition", l.expected(e.as_object()?, op))
    } else if let Some(q) = json("queryfilter") {
        ("condition", l.filter("queryFilter", q.as_object()?, op))
    } else if let Some(k) = json("keyconditions") {
        ("key", l.key_conditions(k.as_object()?))
    } else if let Some(u) = json("attributeupdates") {
        ("update", l.attribute_updates(u.as_object()?))
    } else {
        return None;
    };
    let src = match translated {
        Ok(Some(s)) => s,
        Ok(None) => return Some("(no expression)".into()),
        Err(e) => return Some(format!("error: {e}")),
    };
    let mut subs = Substitutions::new(l.names, l.values);
    let out = match kind {
        "condition" => parse_condition(&src, ExprKind::Condition, &mut subs)
            .map(|c| c.eval(Some(item)).to_string()),
        "key" => {
            let s = schema(f.get("schema").map(String::as_str).unwrap_or("pk S"));
            parse_key_condition(&src, &mut subs, &s).map(|k| format!("{k:?}"))
        }
        _ => parse_update(&src, &mut subs).and_then(|u| {
            u.apply(item).map_err(|e| ExprError(e.to_string()))?;
            Ok(item_to_json(item).to_string())
        }),
    };
    Some(match out.and_then(|o| subs.check_unused().map(|_| o)) {
        Ok(o) => format!("{src} -> {o}"),
        Err(e) => format!("{src} -> error: {e}"),
    })
}

#[test]
fn golden_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("golden dir")
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.path());
    let mut total = 0;
    for entry in entries {
        let path = entry.path();
        let text = std::fs::read_to_string(&path).expect("read golden");
        let mut out = String::new();
        for block in text.split("\n\n") {
            let block = block.trim_matches('\n');
            if block.is_empty() {
                continue;
            }
            let mut case = Case::default();
            let mut expected = None;
            let mut kept = Vec::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("=> ") {
                    expected = Some(e.to_string());
                    continue;
                }
                kept.push(line);
                if line.starts_with('#') {
                    continue;
                }
                if let Some((k, v)) = line.split_once(": ") {
                    case.fields.insert(k.to_string(), v.to_string());
                }
            }
            if case.fields.is_empty() {
                out.push_str(&kept.join("\n"));
                out.push_str("\n\n");
                continue;
            }
            total += 1;
            let got = run(&case);
            if !update && expected.as_deref() != Some(got.as_str()) {
                failures.push(format!(
                    "{}:\n{}\n  expected: {:?}\n  got:      {got}",
                    path.display(),
                    kept.join("\n"),
                    expected
                ));
            }
            out.push_str(&kept.join("\n"));
            out.push_str(&format!("\n=> {got}\n\n"));
        }
        if update {
            std::fs::write(&path, out.trim_end().to_string() + "\n").expect("write golden");
        }
    }
    assert!(total > 0, "no golden cases found");
    assert!(
        failures.is_empty(),
        "{} golden case(s) differ:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
