//! DynamoDB's closed sets of request values as enums. A request carries
//! them as strings ([`Str`]); the constraint pass turns each into its enum
//! or into DynamoDB's "Member must satisfy enum value set" violation, which
//! is reported together with the request's other violations.

use crate::params::Violations;
use dynaraft_model::wire::Str;

/// A closed set of strings, listed in the order DynamoDB's message lists
/// them.
pub trait WireEnum: Sized + Copy + PartialEq + 'static {
    const VALUES: &'static [(&'static str, Self)];

    fn parse(s: &str) -> Option<Self> {
        Self::VALUES.iter().find(|(n, _)| *n == s).map(|(_, v)| *v)
    }

    fn as_str(self) -> &'static str {
        Self::VALUES
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("", |(n, _)| n)
    }

    /// The member's value, or a violation at `path` (and `None`) when it
    /// is not in the set.
    fn member(v: &mut Violations, value: Option<&Str>, path: &str) -> Option<Self> {
        let s = value?;
        let parsed = Self::parse(s);
        if parsed.is_none() {
            let names: Vec<&str> = Self::VALUES.iter().map(|(n, _)| *n).collect();
            v.add(
                Some(s),
                path,
                &format!("Member must satisfy enum value set: [{}]", names.join(", ")),
            );
        }
        parsed
    }
}

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant),+ }

        impl WireEnum for $name {
            const VALUES: &'static [(&'static str, Self)] = &[$(($text, $name::$variant)),+];
        }
    };
}

wire_enum!(
    /// ReturnValues of PutItem, UpdateItem and DeleteItem.
    ReturnValues {
        AllNew = "ALL_NEW",
        UpdatedOld = "UPDATED_OLD",
        AllOld = "ALL_OLD",
        None = "NONE",
        UpdatedNew = "UPDATED_NEW",
    }
);

wire_enum!(
    /// ReturnValuesOnConditionCheckFailure.
    ReturnOnFailure {
        AllOld = "ALL_OLD",
        None = "NONE",
    }
);

wire_enum!(
    /// ReturnConsumedCapacity.
    ReturnCapacity {
        Indexes = "INDEXES",
        Total = "TOTAL",
        None = "NONE",
    }
);

wire_enum!(
    /// ReturnItemCollectionMetrics.
    ReturnMetrics {
        Size = "SIZE",
        None = "NONE",
    }
);

wire_enum!(
    /// ConditionalOperator of the legacy parameters.
    ConditionalOperator {
        And = "AND",
        Or = "OR",
    }
);

wire_enum!(
    /// Select of Query and Scan.
    Select {
        SpecificAttributes = "SPECIFIC_ATTRIBUTES",
        Count = "COUNT",
        AllAttributes = "ALL_ATTRIBUTES",
        AllProjectedAttributes = "ALL_PROJECTED_ATTRIBUTES",
    }
);

wire_enum!(
    /// BillingMode of CreateTable and UpdateTable.
    BillingMode {
        Provisioned = "PROVISIONED",
        PayPerRequest = "PAY_PER_REQUEST",
    }
);

wire_enum!(
    /// AttributeType of an attribute definition.
    ScalarAttributeType {
        B = "B",
        N = "N",
        S = "S",
    }
);

wire_enum!(
    /// KeyType of a key schema element.
    KeyType {
        Hash = "HASH",
        Range = "RANGE",
    }
);

wire_enum!(
    /// ProjectionType of an index.
    ProjectionType {
        All = "ALL",
        Include = "INCLUDE",
        KeysOnly = "KEYS_ONLY",
    }
);

wire_enum!(
    /// StreamViewType of a StreamSpecification.
    StreamViewType {
        NewImage = "NEW_IMAGE",
        OldImage = "OLD_IMAGE",
        NewAndOldImages = "NEW_AND_OLD_IMAGES",
        KeysOnly = "KEYS_ONLY",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_values_are_violations_listing_the_set() {
        let mut v = Violations::default();
        let bad = Str("INVALID".into());
        assert_eq!(
            ReturnValues::member(&mut v, Some(&bad), "returnValues"),
            None
        );
        let good = Str("ALL_OLD".into());
        assert_eq!(
            ReturnValues::member(&mut v, Some(&good), "returnValues"),
            Some(ReturnValues::AllOld)
        );
        assert_eq!(ReturnValues::AllOld.as_str(), "ALL_OLD");
        let err = v.check().unwrap_err();
        assert_eq!(
            err,
            crate::error::ApiError::Validation(
                "1 validation error detected: Value 'INVALID' at 'returnValues' failed to satisfy constraint: Member must satisfy enum value set: [ALL_NEW, UPDATED_OLD, ALL_OLD, NONE, UPDATED_NEW]".into()
            )
        );
    }
}

wire_enum!(
    /// UpdateContributorInsights' ContributorInsightsAction.
    InsightsAction {
        Enable = "ENABLE",
        Disable = "DISABLE",
    }
);

wire_enum!(
    /// ContributorInsightsMode.
    InsightsMode {
        AccessedAndThrottledKeys = "ACCESSED_AND_THROTTLED_KEYS",
        ThrottledKeys = "THROTTLED_KEYS",
    }
);
