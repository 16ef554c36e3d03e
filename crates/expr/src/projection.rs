//! ProjectionExpression: keep only the listed paths of an item. List
//! elements picked by index come back compacted, in index order.

use crate::ast::{Path, PathElem};
use crate::paths;
use dynaraft_model::{AttributeValue, Item};
use std::collections::BTreeMap;

enum Node {
    Leaf(AttributeValue),
    Map(BTreeMap<String, Node>),
    List(BTreeMap<usize, Node>),
}

pub fn project(item: &Item, projection: &[Path]) -> Item {
    let mut root: BTreeMap<String, Node> = BTreeMap::new();
    for p in projection {
        let Some(v) = paths::get(item, p) else {
            continue;
        };
        let Some((PathElem::Attr(first), rest)) = p.elems.split_first() else {
            continue;
        };
        if rest.is_empty() {
            root.insert(first.clone(), Node::Leaf(v.clone()));
            continue;
        }
        let mut node = root
            .entry(first.clone())
            .or_insert_with(|| container(&rest[0]));
        for (i, e) in rest.iter().enumerate() {
            let last = i + 1 == rest.len();
            let next = || {
                if last {
                    Node::Leaf(v.clone())
                } else {
                    container(&rest[i + 1])
                }
            };
            node = match (node, e) {
                (Node::Map(m), PathElem::Attr(a)) => m.entry(a.clone()).or_insert_with(next),
                (Node::List(l), PathElem::Index(x)) => l.entry(*x).or_insert_with(next),
                _ => break,
            };
        }
    }
    root.into_iter().map(|(k, n)| (k, build(n))).collect()
}

fn container(e: &PathElem) -> Node {
    match e {
        PathElem::Attr(_) => Node::Map(BTreeMap::new()),
        PathElem::Index(_) => Node::List(BTreeMap::new()),
    }
}

fn build(n: Node) -> AttributeValue {
    match n {
        Node::Leaf(v) => v,
        Node::Map(m) => AttributeValue::M(m.into_iter().map(|(k, n)| (k, build(n))).collect()),
        Node::List(l) => AttributeValue::L(l.into_values().map(build).collect()),
    }
}
