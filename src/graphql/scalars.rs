//! Custom scalars: `Size` (a byte count that JSON holds exactly) and `Cursor` (opaque).

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};

use crate::domain;

/// A byte count up to 2^53 - 1, as a JSON number.
#[derive(Debug, Clone, Copy)]
pub struct Size(pub u64);

#[Scalar(name = "Size")]
impl ScalarType for Size {
    fn parse(value: Value) -> InputValueResult<Self> {
        if let Value::Number(n) = &value
            && let Some(bytes) = n.as_u64()
            && domain::Size::new(bytes).is_ok()
        {
            return Ok(Size(bytes));
        }
        Err(InputValueError::custom(
            "Size must be a whole number of bytes from 0 to 2^53 - 1",
        ))
    }

    fn to_value(&self) -> Value {
        Value::Number(self.0.into())
    }
}

/// An opaque sync cursor. Parsed (and checked against its space) by the resolvers, so a
/// bad cursor is a `BAD_INPUT` with a helpful message.
#[derive(Debug, Clone)]
pub struct Cursor(pub String);

#[Scalar(name = "Cursor")]
impl ScalarType for Cursor {
    fn parse(value: Value) -> InputValueResult<Self> {
        match value {
            Value::String(s) => Ok(Cursor(s)),
            _ => Err(InputValueError::custom("Cursor must be a string")),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.clone())
    }
}

impl From<domain::Cursor> for Cursor {
    fn from(c: domain::Cursor) -> Self {
        Cursor(c.encode())
    }
}
