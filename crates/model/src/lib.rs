//! The DynamoDB data model: attribute values and their wire form, exact
//! numbers, item sizes, key schemas and the order-preserving storage-key
//! encoding, and the binary item codec used on disk.
//!
//! This crate is pure: no I/O, no clock, no randomness. Every other crate
//! depends on it; it depends on no other dynaraft crate.

pub mod codec;
pub mod key;
pub mod number;
pub mod value;
pub mod wire;

pub use key::{KeyAttr, KeySchema, ScalarType};
pub use number::Number;
pub use value::{AttrType, AttributeValue, Item};

/// Largest item, in bytes, as DynamoDB counts size (400 KB).
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// An error in client input, carrying DynamoDB's exception kind and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// `ValidationException` with DynamoDB's message.
    #[error("{0}")]
    Validation(String),
    /// `SerializationException`: the JSON did not have the expected shape.
    #[error("{0}")]
    Serialization(String),
}
