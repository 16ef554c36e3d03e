//! The one mapping from failures to DynamoDB's wire errors: `__type`,
//! HTTP status and message.

use dynaraft_storage::StorageError;
use serde_json::{Value, json};

const DDB: &str = "com.amazonaws.dynamodb.v20120810#";
/// DynamoDB's messages for a table's, a global index's (writes held back by
/// it) and an index's (reads of it) spent provisioned capacity.
const TABLE_THROTTLED: &str = "The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API.";
const INDEX_WRITE_THROTTLED: &str = "The level of configured provisioned throughput for one or more global secondary indexes of the table was exceeded. Consider increasing your provisioning level for the under-provisioned global secondary indexes with the UpdateTable API";
/// DynamoDB's message for an on-demand table past its OnDemandThroughput.
const ON_DEMAND_MAX_THROTTLED: &str =
    "Throughput exceeds the maximum OnDemandThroughput configured on table or index";
const INDEX_READ_THROTTLED: &str =
    "The level of configured provisioned throughput for the index was exceeded";
const CORAL: &str = "com.amazon.coral.service#";
/// Namespace of parameter validation errors, as DynamoDB sends them.
const VALIDATE: &str = "com.amazon.coral.validate#";

#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    Validation(String),
    /// An item's key does not match its table's key schema: a
    /// ValidationException, except inside TransactWriteItems, where
    /// DynamoDB cancels the transaction with a ValidationError reason for
    /// that item.
    KeySchema(String),
    /// Malformed JSON or wrong JSON shapes; `None` sends no message, as
    /// DynamoDB does for unparseable bodies.
    Serialization(Option<String>),
    /// The target names no operation served here (the message says which).
    UnknownOperation(String),
    MissingAuthenticationToken,
    /// The Authorization header or presigned query names no signature,
    /// credential, signed headers or date (the message lists what).
    IncompleteSignature(String),
    /// The signature does not verify, is stale, or is scoped to another
    /// region, service or date (the message says which).
    InvalidSignature(String),
    /// The access key id is not one this server knows.
    UnrecognizedClient,
    /// The principal's policies do not allow the request (the message
    /// names the principal, action, resource and why, as IAM does).
    AccessDenied(String),
    ResourceNotFound(String),
    ResourceInUse(String),
    /// DescribeContinuousBackups' and CreateBackup's way of saying a
    /// table does not exist.
    TableNotFound(String),
    /// CreateBackup of a table being created, updated or deleted.
    TableInUse(String),
    /// A restore's target table exists.
    TableAlreadyExists(String),
    /// No backup has the ARN given.
    BackupNotFound(String),
    /// The legacy (version 2017.11.29) global table calls' not found.
    GlobalTableNotFound(String),
    /// A resource-based policy that is not there, or not at the revision
    /// expected.
    PolicyNotFound(String),
    /// The backup is being created, or restored from.
    BackupInUse(String),
    /// A restore to a point in time of a table without it.
    PointInTimeRecoveryUnavailable(String),
    /// A restore time outside the table's recovery window.
    InvalidRestoreTime(String),
    /// An export time outside the table's recovery window.
    InvalidExportTime(String),
    /// A ClientToken of an export, or of an import, given again with
    /// other parameters.
    ExportConflict(String),
    ImportConflict(String),
    /// No export, or import, has the ARN given.
    ExportNotFound(String),
    ImportNotFound(String),
    ConditionalCheckFailed {
        item: Option<Value>,
    },
    /// A PartiQL INSERT of a key that exists.
    DuplicateItem,
    LimitExceeded(String),
    /// A write would grow an item collection of a table with local
    /// indexes past the limit.
    ItemCollectionSizeLimitExceeded,
    /// A write was held back too long by its table's global indexes
    /// catching up (back-pressure); `provisioned` tables get DynamoDB's
    /// provisioned-throughput error, on-demand ones its throttling error.
    IndexBackPressure {
        provisioned: bool,
    },
    /// A request refused because a table's, index's or partition's
    /// capacity is spent (nothing was done); `resource` is the ARN of the
    /// table or index that ran out.
    Throttled {
        throttle: crate::capacity::Throttle,
        resource: String,
    },
    /// A single-item write met a running transaction on its item.
    TransactionConflict,
    /// A transaction was canceled; one reason per item, in request order.
    TransactionCanceled {
        reasons: Vec<Value>,
    },
    /// The ClientRequestToken was used by a different request.
    IdempotentParameterMismatch,
    /// The ClientRequestToken's transaction is still running.
    TransactionInProgress,
    InternalServerError(String),
    ServiceUnavailable(String),
    RequestTooLarge,
    /// A stream's shard iterator is older than its lifetime.
    ExpiredIterator(String),
    /// A stream read below what the stream still keeps.
    TrimmedDataAccess(String),
}

impl ApiError {
    pub fn validation(m: impl Into<String>) -> ApiError {
        ApiError::Validation(m.into())
    }

    /// The code of this error inside BatchExecuteStatement's `Responses`
    /// (BatchStatementErrorCodeEnum).
    pub fn batch_code(&self) -> &'static str {
        match self {
            ApiError::Validation(_)
            | ApiError::KeySchema(_)
            | ApiError::Serialization(_)
            | ApiError::RequestTooLarge => "ValidationError",
            ApiError::ResourceNotFound(_) | ApiError::TableNotFound(_) => "ResourceNotFound",
            ApiError::ConditionalCheckFailed { .. } => "ConditionalCheckFailed",
            ApiError::DuplicateItem => "DuplicateItem",
            ApiError::ItemCollectionSizeLimitExceeded => "ItemCollectionSizeLimitExceeded",
            ApiError::IndexBackPressure { provisioned: true } => "ProvisionedThroughputExceeded",
            ApiError::IndexBackPressure { provisioned: false } => "ThrottlingError",
            ApiError::Throttled { throttle, .. } => match throttle.limit {
                crate::capacity::Limit::MaxOnDemand => "ThrottlingError",
                _ => "ProvisionedThroughputExceeded",
            },
            ApiError::TransactionConflict
            | ApiError::TransactionCanceled { .. }
            | ApiError::TransactionInProgress => "TransactionConflict",
            ApiError::LimitExceeded(_) => "RequestLimitExceeded",
            ApiError::MissingAuthenticationToken
            | ApiError::IncompleteSignature(_)
            | ApiError::InvalidSignature(_)
            | ApiError::UnrecognizedClient
            | ApiError::AccessDenied(_) => "AccessDenied",
            _ => "InternalServerError",
        }
    }

    /// The error type of an authentication failure (a metrics label);
    /// `Other` for the rest.
    pub fn type_name(&self) -> &'static str {
        match self {
            ApiError::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            ApiError::IncompleteSignature(_) => "IncompleteSignatureException",
            ApiError::InvalidSignature(_) => "InvalidSignatureException",
            ApiError::UnrecognizedClient => "UnrecognizedClientException",
            ApiError::AccessDenied(_) => "AccessDeniedException",
            _ => "Other",
        }
    }

    pub fn not_found() -> ApiError {
        ApiError::ResourceNotFound("Requested resource not found".into())
    }

    /// HTTP status and the JSON body.
    pub fn to_response(&self) -> (u16, Value) {
        let (status, ty, msg): (u16, String, Option<String>) = match self {
            ApiError::Validation(m) | ApiError::KeySchema(m) => (
                400,
                format!("{VALIDATE}ValidationException"),
                Some(m.clone()),
            ),
            ApiError::Serialization(m) => {
                (400, format!("{CORAL}SerializationException"), m.clone())
            }
            ApiError::UnknownOperation(m) => (
                400,
                format!("{CORAL}UnknownOperationException"),
                Some(m.clone()),
            ),
            ApiError::MissingAuthenticationToken => (
                400,
                format!("{CORAL}MissingAuthenticationTokenException"),
                Some("Request is missing Authentication Token".into()),
            ),
            ApiError::IncompleteSignature(m) => (
                400,
                format!("{CORAL}IncompleteSignatureException"),
                Some(m.clone()),
            ),
            ApiError::InvalidSignature(m) => (
                400,
                format!("{CORAL}InvalidSignatureException"),
                Some(m.clone()),
            ),
            ApiError::UnrecognizedClient => (
                400,
                format!("{CORAL}UnrecognizedClientException"),
                Some("The security token included in the request is invalid.".into()),
            ),
            ApiError::AccessDenied(m) => {
                // IAM's refusals carry `Message`, capitalised.
                let body = json!({
                    "__type": format!("{CORAL}AccessDeniedException"),
                    "Message": m,
                });
                return (400, body);
            }
            ApiError::ResourceNotFound(m) => (
                400,
                format!("{DDB}ResourceNotFoundException"),
                Some(m.clone()),
            ),
            ApiError::ResourceInUse(m) => {
                (400, format!("{DDB}ResourceInUseException"), Some(m.clone()))
            }
            ApiError::TableNotFound(m) => {
                (400, format!("{DDB}TableNotFoundException"), Some(m.clone()))
            }
            ApiError::TableInUse(m) => (400, format!("{DDB}TableInUseException"), Some(m.clone())),
            ApiError::TableAlreadyExists(m) => (
                400,
                format!("{DDB}TableAlreadyExistsException"),
                Some(m.clone()),
            ),
            ApiError::PolicyNotFound(m) => {
                (400, format!("{DDB}PolicyNotFoundException"), Some(m.clone()))
            }
            ApiError::GlobalTableNotFound(m) => (
                400,
                format!("{DDB}GlobalTableNotFoundException"),
                Some(m.clone()),
            ),
            ApiError::BackupNotFound(m) => {
                (400, format!("{DDB}BackupNotFoundException"), Some(m.clone()))
            }
            ApiError::BackupInUse(m) => (400, format!("{DDB}BackupInUseException"), Some(m.clone())),
            ApiError::PointInTimeRecoveryUnavailable(m) => (
                400,
                format!("{DDB}PointInTimeRecoveryUnavailableException"),
                Some(m.clone()),
            ),
            ApiError::InvalidRestoreTime(m) => (
                400,
                format!("{DDB}InvalidRestoreTimeException"),
                Some(m.clone()),
            ),
            ApiError::InvalidExportTime(m) => (
                400,
                format!("{DDB}InvalidExportTimeException"),
                Some(m.clone()),
            ),
            ApiError::ExportConflict(m) => {
                (400, format!("{DDB}ExportConflictException"), Some(m.clone()))
            }
            ApiError::ImportConflict(m) => {
                (400, format!("{DDB}ImportConflictException"), Some(m.clone()))
            }
            ApiError::ExportNotFound(m) => {
                (400, format!("{DDB}ExportNotFoundException"), Some(m.clone()))
            }
            ApiError::ImportNotFound(m) => {
                (400, format!("{DDB}ImportNotFoundException"), Some(m.clone()))
            }
            ApiError::ExpiredIterator(m) => {
                (400, format!("{DDB}ExpiredIteratorException"), Some(m.clone()))
            }
            ApiError::TrimmedDataAccess(m) => (
                400,
                format!("{DDB}TrimmedDataAccessException"),
                Some(m.clone()),
            ),
            ApiError::ConditionalCheckFailed { item } => {
                let mut body = json!({
                    "__type": format!("{DDB}ConditionalCheckFailedException"),
                    "message": "The conditional request failed",
                });
                if let (Some(i), Some(obj)) = (item, body.as_object_mut()) {
                    obj.insert("Item".into(), i.clone());
                }
                return (400, body);
            }
            ApiError::DuplicateItem => (
                400,
                format!("{DDB}DuplicateItemException"),
                Some("Duplicate primary key exists in table".into()),
            ),
            ApiError::LimitExceeded(m) => {
                (400, format!("{DDB}LimitExceededException"), Some(m.clone()))
            }
            ApiError::ItemCollectionSizeLimitExceeded => (
                400,
                format!("{DDB}ItemCollectionSizeLimitExceededException"),
                Some("Item collection size limit exceeded.".into()),
            ),
            ApiError::IndexBackPressure { provisioned: true } => (
                400,
                format!("{DDB}ProvisionedThroughputExceededException"),
                Some(INDEX_WRITE_THROTTLED.into()),
            ),
            ApiError::IndexBackPressure { provisioned: false } => (
                400,
                "com.amazon.coral.availability#ThrottlingException".to_string(),
                Some("Throughput exceeds the current capacity for one or more global secondary indexes. DynamoDB is automatically scaling your index so please try again shortly.".into()),
            ),
            ApiError::Throttled { throttle, resource } => {
                use crate::capacity::{Dir, Limit};
                let (ty, message) = match (throttle.limit, &throttle.index, throttle.dir) {
                    (Limit::MaxOnDemand, _, _) => ("ThrottlingException", ON_DEMAND_MAX_THROTTLED),
                    (_, None, _) => ("ProvisionedThroughputExceededException", TABLE_THROTTLED),
                    (_, Some(_), Dir::Write) => {
                        ("ProvisionedThroughputExceededException", INDEX_WRITE_THROTTLED)
                    }
                    (_, Some(_), Dir::Read) => {
                        ("ProvisionedThroughputExceededException", INDEX_READ_THROTTLED)
                    }
                };
                // The two exceptions spell their list differently (as
                // DynamoDB's model does).
                let list = if ty == "ThrottlingException" {
                    "throttlingReasons"
                } else {
                    "ThrottlingReasons"
                };
                let body = json!({
                    "__type": format!("{DDB}{ty}"),
                    "message": message,
                    list: [{"reason": throttle.reason(), "resource": resource}],
                });
                return (400, body);
            }
            ApiError::TransactionConflict => (
                400,
                format!("{DDB}TransactionConflictException"),
                Some("Transaction is ongoing for the item".into()),
            ),
            ApiError::TransactionCanceled { reasons } => {
                let codes: Vec<&str> = reasons
                    .iter()
                    .map(|r| r.get("Code").and_then(Value::as_str).unwrap_or("None"))
                    .collect();
                let body = json!({
                    "__type": format!("{DDB}TransactionCanceledException"),
                    "CancellationReasons": reasons,
                    "Message": format!(
                        "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
                        codes.join(", ")
                    ),
                });
                return (400, body);
            }
            ApiError::IdempotentParameterMismatch => (
                400,
                format!("{DDB}IdempotentParameterMismatchException"),
                Some("DynamoDB rejected the request because you retried a request with a different payload but with an idempotent token that was already used.".into()),
            ),
            ApiError::TransactionInProgress => (
                400,
                format!("{DDB}TransactionInProgressException"),
                Some("The transaction with the given request token is already in progress.".into()),
            ),
            ApiError::InternalServerError(m) => {
                (500, format!("{DDB}InternalServerError"), Some(m.clone()))
            }
            ApiError::ServiceUnavailable(m) => (
                503,
                format!("{CORAL}ServiceUnavailableException"),
                Some(m.clone()),
            ),
            ApiError::RequestTooLarge => (
                413,
                format!("{CORAL}SerializationException"),
                Some("Request entity too large".into()),
            ),
        };
        let mut body = json!({ "__type": ty });
        if let (Some(m), Some(obj)) = (msg, body.as_object_mut()) {
            obj.insert("message".into(), Value::String(m));
        }
        (status, body)
    }
}

impl From<dynaraft_model::ModelError> for ApiError {
    fn from(e: dynaraft_model::ModelError) -> Self {
        match e {
            dynaraft_model::ModelError::Validation(m) => ApiError::Validation(m),
            dynaraft_model::ModelError::Serialization(m) => ApiError::Serialization(Some(m)),
        }
    }
}

impl From<dynaraft_expr::ExprError> for ApiError {
    fn from(e: dynaraft_expr::ExprError) -> Self {
        ApiError::Validation(e.0)
    }
}

impl From<dynaraft_cluster::ClusterError> for ApiError {
    fn from(e: dynaraft_cluster::ClusterError) -> Self {
        use dynaraft_cluster::ClusterError as C;
        match e {
            C::Storage(s) => s.into(),
            // Deleted while the request was on its way.
            C::NoTable(_) => ApiError::not_found(),
            // Not leader, stale map or no quorum after the router's retries:
            // the write did not happen or may not have; the client retries.
            C::NotLeader { .. }
            | C::NoGroup(_)
            | C::StaleEpoch { .. }
            | C::Unreachable(_)
            | C::Unavailable(_) => {
                crate::metrics::request_unavailable();
                if let Some(suppressed) = UNAVAILABLE_LOG.admit() {
                    tracing::warn!(error = %e, suppressed, "request could not be served");
                }
                ApiError::ServiceUnavailable(e.to_string())
            }
        }
    }
}

/// Least time between two warnings of requests that could not be served,
/// in milliseconds: while a node is down every request fails the same way,
/// and one line per request would flood the log.
pub const UNAVAILABLE_LOG_EVERY_MS: u64 = 1_000;

static UNAVAILABLE_LOG: LogLimit = LogLimit::new(UNAVAILABLE_LOG_EVERY_MS);

/// Lets one log line through per interval and counts the others.
struct LogLimit {
    every: std::time::Duration,
    /// When a line last went through.
    last: std::sync::Mutex<Option<std::time::Instant>>,
    suppressed: std::sync::atomic::AtomicU64,
}

impl LogLimit {
    const fn new(every_ms: u64) -> LogLimit {
        LogLimit {
            every: std::time::Duration::from_millis(every_ms),
            last: std::sync::Mutex::new(None),
            suppressed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(lines suppressed since the last one)` if a line may go now.
    fn admit(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        // A poisoned lock only guards a timestamp, still valid.
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < self.every) {
            self.suppressed.fetch_add(1, Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Relaxed))
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Unavailable(m) => ApiError::ServiceUnavailable(m),
            other => {
                tracing::error!(error = %other, "storage failure");
                ApiError::InternalServerError("Internal server error".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LogLimit;

    #[test]
    fn one_line_per_interval_and_the_rest_counted() {
        let limit = LogLimit::new(1_000);
        assert_eq!(limit.admit(), Some(0));
        for _ in 0..5 {
            assert_eq!(limit.admit(), None);
        }
        std::thread::sleep(std::time::Duration::from_millis(1_100));
        assert_eq!(
            limit.admit(),
            Some(5),
            "the next line says how many were skipped"
        );
        assert_eq!(limit.admit(), None);
    }
}
