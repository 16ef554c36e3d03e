//! Any string yields a result or a ValidationException: no panic, no stack
//! overflow. A seeded generator of token soup (the seed is printed, so a
//! failure is reproducible) plus hand-made worst cases. The coverage-guided
//! fuzz target is separate work (issue 3).

use dynaraft_expr::*;
use dynaraft_model::value::item_from_json;
use std::collections::BTreeMap;

const PIECES: &[&str] = &[
    "a",
    "#n",
    ":v",
    ":s",
    "(",
    ")",
    "[",
    "]",
    "0",
    "12",
    ".",
    ",",
    "=",
    "<>",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    " AND ",
    " OR ",
    " NOT ",
    " BETWEEN ",
    " IN ",
    "SET ",
    "REMOVE ",
    "ADD ",
    "DELETE ",
    "size",
    "attribute_exists",
    "begins_with",
    "contains",
    "if_not_exists",
    "list_append",
    " ",
    "$",
    "é",
];

struct XorShift(u64);
impl XorShift {
    /// A generator seeded from `EXPR_SEED`, else `default`; the seed is
    /// printed so a failure can be replayed.
    fn seeded(default: u64) -> XorShift {
        let seed = std::env::var("EXPR_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default);
        println!("seed {seed}");
        XorShift(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn subs() -> Substitutions {
    let values = item_from_json(&serde_json::json!({":v": {"N": "1"}, ":s": {"S": "x"}})).unwrap();
    Substitutions::new(
        BTreeMap::from([("#n".to_string(), "name".to_string())]),
        values,
    )
}

fn exercise(src: &str) {
    let item =
        item_from_json(&serde_json::json!({"a": {"L": [{"N": "1"}]}, "name": {"S": "x"}})).unwrap();
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
}

#[test]
fn random_token_soup_never_panics() {
    let mut rng = XorShift::seeded(0x5eed);
    for _ in 0..20_000 {
        let len = (rng.next() % 24) as usize;
        let s: String = (0..len)
            .map(|_| PIECES[(rng.next() as usize) % PIECES.len()])
            .collect();
        exercise(&s);
    }
}

#[test]
fn deep_nesting_is_rejected_before_recursion_hurts() {
    // Run on the stack of a default tokio worker (2 MiB; the server gives
    // its workers four times that), in a debug build, to show that the
    // depth limit, not a big stack, is what saves us.
    let stack = std::env::var("EXPR_STACK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2 * 1024 * 1024);
    let only: Option<usize> = std::env::var("EXPR_CASE").ok().and_then(|s| s.parse().ok());
    let h = std::thread::Builder::new()
        .stack_size(stack)
        .spawn(move || {
            for src in [
                format!("{}a = :v{}", "(".repeat(2000), ")".repeat(2000)),
                format!("{}a = :v{}", "(a = :v AND ".repeat(300), ")".repeat(300)),
                format!("{}a = :v", "NOT ".repeat(1000)),
                format!("a{}", ".b".repeat(2000)),
                format!("a{}", "[0]".repeat(1300)),
                format!(
                    "SET a = {}:v{}",
                    "if_not_exists(a, ".repeat(250),
                    ")".repeat(250)
                ),
                "a = :v AND ".repeat(400) + "a = :v",
            ]
            .into_iter()
            .enumerate()
            .filter(|(i, _)| only.is_none_or(|o| o == *i))
            .map(|(_, s)| s)
            {
                let r = parse_condition(&src, ExprKind::Condition, &mut subs());
                assert!(r.is_err() || src.len() <= MAX_EXPRESSION_BYTES);
                exercise(&src);
            }
        });
    h.unwrap().join().expect("no stack overflow or panic");
}

const PARTIQL_PIECES: &[&str] = &[
    "SELECT ",
    "INSERT INTO ",
    "UPDATE ",
    "DELETE FROM ",
    "EXISTS(",
    " FROM ",
    " WHERE ",
    " VALUE ",
    " SET ",
    " REMOVE ",
    " RETURNING ",
    " ALL ",
    " OLD ",
    " NEW ",
    "*",
    "\"t\"",
    "\"i\"",
    "t",
    "a",
    "'s'",
    "''",
    "'",
    "\"",
    "?",
    "1",
    "-2.5e3",
    "1e999",
    "{",
    "}",
    "[",
    "]",
    "<<",
    ">>",
    "(",
    ")",
    ",",
    ".",
    ":",
    ";",
    "=",
    "<>",
    "!=",
    "<",
    ">=",
    "+",
    "-",
    " AND ",
    " OR ",
    " NOT ",
    " IN ",
    " BETWEEN ",
    " IS ",
    " MISSING",
    " NULL",
    " TRUE",
    " ORDER BY ",
    " DESC",
    "begins_with",
    "size",
    "set_add",
    "--",
    "/*",
    "*/",
    "é",
    " ",
];

/// Valid statements that the soup test mutates.
const PARTIQL_BASES: &[&str] = &[
    "SELECT a.b[1], c FROM \"t\".\"i\" WHERE pk = ? AND sk BETWEEN 1 AND 2 ORDER BY sk DESC",
    "INSERT INTO t VALUE {'pk': 'a', 'm': {'l': [1, -2.5e3, TRUE, NULL]}, 's': <<'x', 'y'>>}",
    "UPDATE t SET a = a + 1, l = list_append(l, [1]) REMOVE b WHERE pk = 'a' AND c IS NOT MISSING RETURNING ALL NEW *",
    "DELETE FROM t WHERE pk = 'a' AND (x IN [1, 2] OR NOT begins_with(y, 'p')) RETURNING ALL OLD *",
    "EXISTS(SELECT * FROM t WHERE pk = ? AND size(s) > 1)",
];

/// Any statement text parses or is refused with a message: no panic, and a
/// parsed statement's literals convert or are refused too. Valid statements
/// are mutated (pieces inserted, characters removed) so that the parser's
/// every stage sees input, not only its first token.
#[test]
fn partiql_mutations_never_panic() {
    let mut rng = XorShift::seeded(0x9a71);
    let params = [serde_json::json!({"S": "p"}), serde_json::json!({"N": "1"})];
    let (mut parsed, mut refused) = (0, 0);
    for _ in 0..20_000 {
        let mut s = PARTIQL_BASES[(rng.next() as usize) % PARTIQL_BASES.len()].to_string();
        for _ in 0..rng.next() % 4 {
            let bounds: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
            let at = bounds[(rng.next() as usize) % bounds.len()];
            if rng.next().is_multiple_of(2) {
                s.insert_str(
                    at,
                    PARTIQL_PIECES[(rng.next() as usize) % PARTIQL_PIECES.len()],
                );
            } else if let Some(c) = s[at..].chars().next() {
                s.replace_range(at..at + c.len_utf8(), "");
            }
        }
        match partiql::parse(&s) {
            Ok((statement, _)) => {
                parsed += 1;
                if let partiql::Statement::Insert { value, .. } = statement {
                    let _ = partiql::attribute_json(&value, &params);
                }
            }
            Err(e) => {
                refused += 1;
                assert!(!e.0.is_empty() || s.is_empty());
            }
        }
    }
    assert!(
        parsed > 1000 && refused > 1000,
        "parsed {parsed}, refused {refused}"
    );
}

#[test]
fn partiql_deep_nesting_is_refused() {
    let h = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(|| {
            for src in [
                format!(
                    "SELECT * FROM t WHERE {}a = 1{}",
                    "(".repeat(1000),
                    ")".repeat(1000)
                ),
                format!("SELECT * FROM t WHERE {}a = 1", "NOT ".repeat(1500)),
                format!(
                    "INSERT INTO t VALUE {}1{}",
                    "{'a': ".repeat(1000),
                    "}".repeat(1000)
                ),
                format!(
                    "INSERT INTO t VALUE {}1{}",
                    "[".repeat(2000),
                    "]".repeat(2000)
                ),
                format!("SELECT a{} FROM t", ".b".repeat(1000)),
            ] {
                let r = partiql::parse(&src);
                assert!(r.is_err(), "{} bytes of nesting parsed", src.len());
            }
        });
    h.unwrap().join().expect("no stack overflow or panic");
}
