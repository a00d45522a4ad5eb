//! PATCH (RFC 7644 §3.5.2) — being written.
use serde_json::Value;

use super::resource::Stored;
use super::schema::ResourceSchema;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Operation;

pub fn parse(_body: &Value) -> Result<Vec<Operation>> {
    Err(Error::NotImplemented("PATCH is not implemented yet".into()))
}

pub fn apply(_schema: &ResourceSchema, current: &Stored, _ops: &[Operation]) -> Result<Stored> {
    Ok(current.clone())
}
