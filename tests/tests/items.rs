//! Item operations through the Rust SDK.
//! Checks: API Reference PutItem, GetItem, UpdateItem, DeleteItem
//! (ReturnValues, ReturnValuesOnConditionCheckFailure, ReturnConsumedCapacity);
//! Developer Guide "Condition expressions", "Update expressions",
//! "Supported data types", "Service quotas" (item and key size limits).

use aws_sdk_dynamodb::types::*;
use dynaraft_tests::av::*;
use dynaraft_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_delete_with_return_values() {
    let t = TestServer::start().await;
    let c = &t.client;
    create_table(c, "items", None).await;
    let p = c
        .put_item()
        .table_name("items")
        .item("pk", s("k"))
        .item("v", n("1.50"))
        .item(
            "b",
            A::B(aws_sdk_dynamodb::primitives::Blob::new(vec![0, 1, 2])),
        )
        .item("set", A::Ss(vec!["x".into(), "y".into()]))
        .item("e", s(""))
        .item(
            "m",
            A::M([("in".to_string(), A::L(vec![A::Null(true), A::Bool(false)]))].into()),
        )
        .return_consumed_capacity(ReturnConsumedCapacity::Total)
        .send()
        .await
        .unwrap();
    assert_eq!(
        p.consumed_capacity().and_then(|c| c.capacity_units()),
        Some(1.0)
    );
    assert!(p.attributes().is_none());
    let g = c
        .get_item()
        .table_name("items")
        .key("pk", s("k"))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let item = g.item().unwrap();
    assert_eq!(
        item.get("v"),
        Some(&n("1.5")),
        "numbers come back normalised"
    );
    assert_eq!(
        item.get("e"),
        Some(&s("")),
        "empty strings allowed outside keys"
    );
    let p = c
        .get_item()
        .table_name("items")
        .key("pk", s("k"))
        .projection_expression("m.#i[1], v")
        .expression_attribute_names("#i", "in")
        .send()
        .await
        .unwrap();
    assert_eq!(p.item().unwrap().len(), 2);
    assert_eq!(
        p.item().unwrap().get("m"),
        Some(&A::M(
            [("in".to_string(), A::L(vec![A::Bool(false)]))].into()
        ))
    );

    let old = c
        .put_item()
        .table_name("items")
        .item("pk", s("k"))
        .item("v", n("2"))
        .return_values(ReturnValue::AllOld)
        .send()
        .await
        .unwrap();
    assert_eq!(old.attributes().unwrap().get("v"), Some(&n("1.5")));
    let e = c
        .put_item()
        .table_name("items")
        .item("pk", s("k"))
        .return_values(ReturnValue::AllNew)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e),
        (
            "ValidationException".into(),
            "ReturnValues can only be ALL_OLD or NONE".into()
        )
    );

    let d = c
        .delete_item()
        .table_name("items")
        .key("pk", s("k"))
        .return_values(ReturnValue::AllOld)
        .send()
        .await
        .unwrap();
    assert_eq!(d.attributes().unwrap().get("v"), Some(&n("2")));
    assert!(
        c.get_item()
            .table_name("items")
            .key("pk", s("k"))
            .send()
            .await
            .unwrap()
            .item()
            .is_none()
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_and_check_failures() {
    let t = TestServer::start().await;
    let c = &t.client;
    create_table(c, "cond", None).await;
    c.put_item()
        .table_name("cond")
        .item("pk", s("a"))
        .item("price", n("100"))
        .send()
        .await
        .unwrap();
    // "Conditional put": attribute_not_exists prevents overwrites.
    let e = c
        .put_item()
        .table_name("cond")
        .item("pk", s("a"))
        .condition_expression("attribute_not_exists(pk)")
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e),
        (
            "ConditionalCheckFailedException".into(),
            "The conditional request failed".into()
        )
    );
    let item = e.as_service_error().and_then(|se| match se {
        aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(x) => {
            x.item().cloned()
        }
        _ => None,
    });
    assert_eq!(item.and_then(|i| i.get("price").cloned()), Some(n("100")));
    // "Conditional deletes" and "Conditional updates" from the guide.
    let e = c
        .delete_item()
        .table_name("cond")
        .key("pk", s("a"))
        .condition_expression("price > :limit")
        .expression_attribute_values(":limit", n("500"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err_of(&e).0, "ConditionalCheckFailedException");
    c.update_item()
        .table_name("cond")
        .key("pk", s("a"))
        .update_expression("SET price = price - :discount")
        .condition_expression("price > :limit")
        .expression_attribute_values(":discount", n("75"))
        .expression_attribute_values(":limit", n("50"))
        .send()
        .await
        .unwrap();
    let g = c
        .get_item()
        .table_name("cond")
        .key("pk", s("a"))
        .send()
        .await
        .unwrap();
    assert_eq!(g.item().unwrap().get("price"), Some(&n("25")));
    // Validation errors are ValidationException, never a failed condition.
    let e = c
        .put_item()
        .table_name("cond")
        .item("pk", s("b"))
        .condition_expression("status = :s")
        .expression_attribute_values(":s", s("x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "Invalid ConditionExpression: Attribute name is a reserved keyword; reserved keyword: status"
    );
    let e = c
        .put_item()
        .table_name("cond")
        .item("pk", s("b"))
        .condition_expression("attribute_exists(pk)")
        .expression_attribute_values(":unused", s("x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "Value provided in ExpressionAttributeValues unused in expressions: keys: {:unused}"
    );
    let e = c
        .put_item()
        .table_name("cond")
        .item("pk", s("b"))
        .expression_attribute_values(":v", s("x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "ExpressionAttributeValues can only be specified when using expressions: ConditionExpression is null"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_item_return_values() {
    let t = TestServer::start().await;
    let c = &t.client;
    create_table(c, "upd", None).await;
    // UpdateItem on a missing item creates it.
    let r = c
        .update_item()
        .table_name("upd")
        .key("pk", s("p"))
        .update_expression("SET a = :one, b = :list ADD c :two")
        .expression_attribute_values(":one", n("1"))
        .expression_attribute_values(":two", n("2"))
        .expression_attribute_values(":list", A::L(vec![s("x")]))
        .return_values(ReturnValue::AllNew)
        .send()
        .await
        .unwrap();
    assert_eq!(r.attributes().unwrap().len(), 4);
    let r = c
        .update_item()
        .table_name("upd")
        .key("pk", s("p"))
        .update_expression("SET b = list_append(b, :more) REMOVE a")
        .expression_attribute_values(":more", A::L(vec![s("y")]))
        .return_values(ReturnValue::UpdatedOld)
        .send()
        .await
        .unwrap();
    let old = r.attributes().unwrap();
    assert_eq!(old.len(), 2);
    assert_eq!(old.get("a"), Some(&n("1")));
    let r = c
        .update_item()
        .table_name("upd")
        .key("pk", s("p"))
        .update_expression("ADD c :two")
        .expression_attribute_values(":two", n("2"))
        .return_values(ReturnValue::UpdatedNew)
        .send()
        .await
        .unwrap();
    assert_eq!(r.attributes().unwrap().get("c"), Some(&n("4")));
    let r = c
        .update_item()
        .table_name("upd")
        .key("pk", s("p"))
        .update_expression("SET d = :v")
        .expression_attribute_values(":v", s("new"))
        .return_values(ReturnValue::AllOld)
        .send()
        .await
        .unwrap();
    assert!(r.attributes().unwrap().get("d").is_none());
    let e = c
        .update_item()
        .table_name("upd")
        .key("pk", s("p"))
        .update_expression("SET pk = :v")
        .expression_attribute_values(":v", s("x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "One or more parameter values were invalid: Cannot update attribute pk. This attribute is part of the key"
    );
    let e = c
        .update_item()
        .table_name("upd")
        .key("pk", s("p"))
        .update_expression("SET d = d + :one")
        .expression_attribute_values(":one", n("1"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "An operand in the update expression has an incorrect data type"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_model_limits() {
    let t = TestServer::start().await;
    let c = &t.client;
    create_table(c, "lim", Some(("sk", ScalarAttributeType::S))).await;
    let put = |v: A| {
        c.put_item()
            .table_name("lim")
            .item("pk", s("p"))
            .item("sk", s("s"))
            .item("v", v)
            .send()
    };
    let e = put(n("1e126")).await.unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "Number overflow. Attempting to store a number with magnitude larger than supported range"
    );
    let e = put(n("12345678901234567890123456789012345678901"))
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "Attempting to store more than 38 significant digits in a Number"
    );
    let e = put(A::Ss(vec!["a".into(), "a".into()])).await.unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "One or more parameter values were invalid: Input collection [a, a] contains duplicates."
    );
    let e = put(s(&"x".repeat(400 * 1024))).await.unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "Item size has exceeded the maximum allowed size"
    );
    // Exactly at the limit is accepted: 400 KB minus the other attributes.
    let room = 400 * 1024 - (2 + 1) - (2 + 1) - 1;
    put(s(&"x".repeat(room))).await.unwrap();
    let e = c
        .put_item()
        .table_name("lim")
        .item("pk", s(&"k".repeat(2049)))
        .item("sk", s("s"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "One or more parameter values were invalid: Size of hashkey has exceeded the maximum size limit of2048 bytes"
    );
    let e = c
        .put_item()
        .table_name("lim")
        .item("pk", s("p"))
        .item("sk", s(&"k".repeat(1025)))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "One or more parameter values were invalid: Aggregated size of all range keys has exceeded the size limit of 1024 bytes"
    );
    let e = c
        .put_item()
        .table_name("lim")
        .item("pk", s(""))
        .item("sk", s("s"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain an empty string value. Key: pk"
    );
    let e = c
        .put_item()
        .table_name("lim")
        .item("pk", n("1"))
        .item("sk", s("s"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "One or more parameter values were invalid: Type mismatch for key pk expected: S actual: N"
    );
    let e = c
        .put_item()
        .table_name("lim")
        .item("pk", s("p"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "One or more parameter values were invalid: Missing the key sk in the item"
    );
    let e = c
        .get_item()
        .table_name("lim")
        .key("pk", s("p"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "The provided key element does not match the schema"
    );
    // Exact decimal arithmetic, no floating point.
    c.put_item()
        .table_name("lim")
        .item("pk", s("n"))
        .item("sk", s("n"))
        .item("x", n("0.1"))
        .send()
        .await
        .unwrap();
    let r = c
        .update_item()
        .table_name("lim")
        .key("pk", s("n"))
        .key("sk", s("n"))
        .update_expression("SET x = x + :y")
        .expression_attribute_values(":y", n("0.2"))
        .return_values(ReturnValue::UpdatedNew)
        .send()
        .await
        .unwrap();
    assert_eq!(r.attributes().unwrap().get("x"), Some(&n("0.3")));
    t.stop().await;
}

/// Developer Guide "Legacy conditional parameters": Expected,
/// ConditionalOperator and AttributeUpdates behave like their expressions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_expected_and_attribute_updates() {
    let t = TestServer::start().await;
    let c = &t.client;
    create_table(c, "legacy", None).await;
    let cond = |op: ComparisonOperator, v: Vec<A>| {
        ExpectedAttributeValue::builder()
            .comparison_operator(op)
            .set_attribute_value_list(Some(v))
            .build()
    };
    c.put_item()
        .table_name("legacy")
        .item("pk", s("a"))
        .item("n", n("5"))
        .expected(
            "pk",
            ExpectedAttributeValue::builder().exists(false).build(),
        )
        .send()
        .await
        .unwrap();
    let e = c
        .put_item()
        .table_name("legacy")
        .item("pk", s("a"))
        .expected(
            "pk",
            ExpectedAttributeValue::builder().exists(false).build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(err_of(&e).0, "ConditionalCheckFailedException");
    let upd = |action: AttributeAction, v: Option<A>| {
        AttributeValueUpdate::builder()
            .action(action)
            .set_value(v)
            .build()
    };
    let r = c
        .update_item()
        .table_name("legacy")
        .key("pk", s("a"))
        .attribute_updates("n", upd(AttributeAction::Add, Some(n("2"))))
        .attribute_updates(
            "tags",
            upd(AttributeAction::Put, Some(A::Ss(vec!["x".into()]))),
        )
        .expected(
            "n",
            cond(ComparisonOperator::Between, vec![n("1"), n("10")]),
        )
        .return_values(ReturnValue::AllNew)
        .send()
        .await
        .unwrap();
    assert_eq!(r.attributes().unwrap().get("n"), Some(&n("7")));
    let e = c
        .update_item()
        .table_name("legacy")
        .key("pk", s("a"))
        .attribute_updates("n", upd(AttributeAction::Delete, None))
        .expected("n", cond(ComparisonOperator::Gt, vec![n("100")]))
        .expected("tags", cond(ComparisonOperator::Null, vec![]))
        .conditional_operator(ConditionalOperator::Or)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err_of(&e).0, "ConditionalCheckFailedException");
    let e = c
        .update_item()
        .table_name("legacy")
        .key("pk", s("a"))
        .attribute_updates("n", upd(AttributeAction::Delete, None))
        .update_expression("REMOVE n")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {AttributeUpdates} Expression parameters: {UpdateExpression}"
    );
    let e = c
        .delete_item()
        .table_name("legacy")
        .key("pk", s("a"))
        .expected(
            "n",
            cond(ComparisonOperator::Lt, vec![A::Ss(vec!["x".into()])]),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "One or more parameter values were invalid: ComparisonOperator LT is not valid for SS AttributeValue type"
    );
    let e = c
        .update_item()
        .table_name("legacy")
        .key("pk", s("a"))
        .attribute_updates("pk", upd(AttributeAction::Put, Some(s("b"))))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "One or more parameter values were invalid: Cannot update attribute pk. This attribute is part of the key"
    );
    c.delete_item()
        .table_name("legacy")
        .key("pk", s("a"))
        .expected("n", cond(ComparisonOperator::Eq, vec![n("7")]))
        .send()
        .await
        .unwrap();
    t.stop().await;
}
