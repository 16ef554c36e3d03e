//! The parser's accepted forms and DynamoDB's syntax-error wording.

use super::*;
use serde_json::json;

fn ok(src: &str) -> Statement {
    match parse(src) {
        Ok((s, _)) => s,
        Err(e) => panic!("{src}: {e}"),
    }
}

fn err(src: &str) -> String {
    match parse(src) {
        Ok(s) => panic!("{src} parsed: {s:?}"),
        Err(e) => e.0,
    }
}

fn path(names: &[&str]) -> Path {
    Path {
        elems: names
            .iter()
            .map(|n| PathElem::Attr(n.to_string()))
            .collect(),
    }
}

#[test]
fn select_forms() {
    let Statement::Select(s) =
        ok(r#"select * from "T"."Ix" where pk = 'a' and begins_with("sk", 'p') order by sk desc;"#)
    else {
        panic!("not a select")
    };
    assert_eq!(s.projection, None);
    assert_eq!(s.target.table, "T");
    assert_eq!(s.target.index.as_deref(), Some("Ix"));
    assert_eq!(s.order, vec![(path(&["sk"]), true)]);
    let filter = s.filter.expect("where");
    let c = filter.conjuncts();
    assert_eq!(c.len(), 2);
    assert!(matches!(c[1], Expr::Call(name, args) if name == "begins_with" && args.len() == 2));

    let Statement::Select(s) =
        ok("SELECT a.b[2], c['d'] FROM t WHERE x IN [1, 2] OR NOT y BETWEEN 1 AND 3")
    else {
        panic!("not a select")
    };
    let p = s.projection.expect("paths");
    assert_eq!(
        p[0].elems,
        vec![
            PathElem::Attr("a".into()),
            PathElem::Attr("b".into()),
            PathElem::Index(2)
        ]
    );
    assert_eq!(p[1], path(&["c", "d"]));
    assert_eq!(output_name(&p[0]), "b");
}

#[test]
fn writes_and_parameters() {
    let (s, n) =
        parse("INSERT INTO t VALUE {'pk': ?, 'm': {'l': [1, 'x', TRUE, NULL]}, 's': <<'a', 'b'>>}")
            .expect("insert");
    assert_eq!(n, 1);
    let Statement::Insert { value, .. } = s else {
        panic!("not an insert")
    };
    let params = [json!({"S": "k"})];
    assert_eq!(
        attribute_json(&value, &params).expect("value"),
        Some(json!({"M": {
            "pk": {"S": "k"},
            "m": {"M": {"l": {"L": [{"N": "1"}, {"S": "x"}, {"BOOL": true}, {"NULL": true}]}}},
            "s": {"SS": ["a", "b"]},
        }}))
    );
    assert_eq!(
        attribute_json(&value, &[]).expect_err("too few").0,
        "Number of parameters in request and statement don't match."
    );

    let Statement::Update {
        actions, returning, ..
    } = ok(
        "UPDATE t SET a = 1 SET b = a + 2, c = list_append(c, [1]) REMOVE d WHERE pk = 1 RETURNING MODIFIED NEW *",
    )
    else {
        panic!("not an update")
    };
    assert_eq!(actions.len(), 4);
    assert_eq!(returning, Some(Returning::ModifiedNew));
    assert!(matches!(
        ok("DELETE FROM t WHERE pk = 1 RETURNING ALL OLD *"),
        Statement::Delete {
            returning: Some(Returning::AllOld),
            ..
        }
    ));
    assert!(matches!(
        ok("EXISTS(SELECT * FROM t WHERE pk = 1 AND a IS MISSING)"),
        Statement::Exists(_)
    ));
    // Comments, a doubled quote, a negative number.
    assert!(matches!(
        ok("SELECT * FROM t -- c\n WHERE /* c */ a = 'it''s' AND b = -1.5e3"),
        Statement::Select(_)
    ));
}

#[test]
fn dynamodb_error_words() {
    let nwf = NOT_WELL_FORMED;
    assert_eq!(
        err("SELECT * FROM t WHERE pk = 1 foo"),
        format!("{nwf}Unexpected token after expression")
    );
    assert_eq!(
        err("SELECT * FROM t WHERE pk = 1)"),
        format!("{nwf}Unexpected token after expression")
    );
    assert_eq!(
        err("DELETE FROM t WHERE pk = 1 ORDER BY pk"),
        format!("{nwf}Unexpected token after expression")
    );
    assert_eq!(
        err("SELECT * FROM t WHERE"),
        format!("{nwf}Unexpected term")
    );
    assert_eq!(
        err("SELECT * FROM t WHERE NOT"),
        format!("{nwf}Unexpected term")
    );
    assert_eq!(
        err("SELECT * FROM t WHERE ("),
        format!("{nwf}Unexpected term")
    );
    assert_eq!(
        err("SELECT * FROM t WHERE pk = 'a' AND"),
        format!("{nwf}Missing right-hand side expression of infix operator")
    );
    assert_eq!(
        err("SELECT * FROM t WHERE ORDER BY pk"),
        format!("{nwf}Unexpected keyword")
    );
    assert_eq!(
        err("SELECT * FROM t WHERE IS NULL"),
        format!("{nwf}Unexpected operator")
    );
    assert_eq!(
        err("SELECT * FROM t WHERE pk = 'a' AND x IS FOO"),
        format!("{nwf}Expected type name")
    );
    assert_eq!(
        err("DELETE FROM"),
        format!("{nwf}Expected identifier for simple path")
    );
    assert_eq!(err("SELECT * FROM"), format!("{nwf}Unexpected term"));
    assert_eq!(
        err("SELECT * FROM t x WHERE pk = 'a'"),
        "Aliasing is not supported"
    );
    assert_eq!(
        err("UPDATE t AS x SET a = 3 WHERE pk = 'x'"),
        "Aliasing is not supported"
    );
    assert_eq!(err("SELECT * FROM t WHERE pk = 1 # note"), nwf);
    assert_eq!(err("SELECT * FROM t WHERE pk = 1e2147483648"), nwf);
    assert_eq!(
        err("SELECTT * FROMM t"),
        format!("{nwf}Expected data manipulation")
    );
    assert_eq!(
        err("UPDATE t SET a = 1"),
        "Where clause does not contain a mandatory equality on all key attributes"
    );
    let deep = format!(
        "SELECT * FROM t WHERE {}a = 1{}",
        "(".repeat(400),
        ")".repeat(400)
    );
    assert!(err(&deep).starts_with(nwf));
}

#[test]
fn number_rules_name_the_place() {
    let (s, _) = parse("INSERT INTO t VALUE {'pk': 1, 'l': [1, 1e126]}").expect("parses");
    let Statement::Insert { value, .. } = s else {
        panic!("not an insert")
    };
    assert_eq!(
        attribute_json(&value, &[]).expect_err("overflow").0,
        "Number overflow. Attempting to store a number with magnitude larger than supported range under root.l[1]"
    );
    let (s, _) = parse("INSERT INTO t VALUE {'pk': 1, 's': <<?>>}").expect("parses");
    let Statement::Insert { value, .. } = s else {
        panic!("not an insert")
    };
    assert_eq!(
        attribute_json(&value, &[json!({"S": "x"})])
            .expect_err("bag")
            .0,
        "Unsupported data type in Bag"
    );
}
