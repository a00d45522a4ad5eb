//! List and search requests (RFC 7644 §3.4.2, §3.4.3): parameters in, ListResponse out.

use serde_json::{Map, Value};

use super::schema::LIST_RESPONSE_SCHEMA;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortOrder {
    Ascending,
    Descending,
}

/// A list request as the client sent it, from the query string or a `.search` body.
/// Parameter names are matched case-insensitively (RFC 7643 §2.1 spirit; clients vary).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListRequest {
    pub filter: Option<String>,
    pub sort_by: Option<String>,
    pub sort_order: Option<SortOrder>,
    /// 1-based index of the first result.
    pub start_index: u64,
    /// Results per page, already clamped to the server maximum.
    pub count: u64,
    pub attributes: Vec<String>,
    pub excluded_attributes: Vec<String>,
}

/// Page-size limits from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct PageLimits {
    pub default_count: u64,
    pub max_count: u64,
}

impl ListRequest {
    /// From URL query pairs (already percent-decoded).
    pub fn from_query(pairs: &[(String, String)], limits: PageLimits) -> Result<Self> {
        let mut request = ListRequest {
            start_index: 1,
            count: limits.default_count.min(limits.max_count),
            ..Default::default()
        };
        for (name, value) in pairs {
            match name.to_ascii_lowercase().as_str() {
                "filter" => request.filter = Some(value.clone()),
                "sortby" => request.sort_by = non_empty(value),
                "sortorder" => request.sort_order = Some(parse_sort_order(value)?),
                "startindex" => request.start_index = parse_start_index(value)?,
                "count" => request.count = parse_count(value, limits)?,
                "attributes" => request.attributes = split_names(value),
                "excludedattributes" => request.excluded_attributes = split_names(value),
                _ => {}
            }
        }
        Ok(request)
    }

    /// From a `POST .search` body (`urn:ietf:params:scim:api:messages:2.0:SearchRequest`).
    pub fn from_search_body(body: &Value, limits: PageLimits) -> Result<Self> {
        let Value::Object(fields) = body else {
            return Err(Error::InvalidSyntax("the search request must be a JSON object".into()));
        };
        let mut request = ListRequest {
            start_index: 1,
            count: limits.default_count.min(limits.max_count),
            ..Default::default()
        };
        for (name, value) in fields {
            let text = |what: &str| -> Result<String> {
                value
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Error::InvalidValue(format!("'{name}' must be {what}")))
            };
            match name.to_ascii_lowercase().as_str() {
                "filter" => request.filter = Some(text("a filter string")?),
                "sortby" => request.sort_by = non_empty(&text("an attribute name")?),
                "sortorder" => {
                    request.sort_order = Some(parse_sort_order(&text("\"ascending\" or \"descending\"")?)?)
                }
                "startindex" => request.start_index = parse_start_index(&number_text(name, value)?)?,
                "count" => request.count = parse_count(&number_text(name, value)?, limits)?,
                "attributes" => request.attributes = names_value(name, value)?,
                "excludedattributes" => request.excluded_attributes = names_value(name, value)?,
                _ => {}
            }
        }
        Ok(request)
    }
}

fn non_empty(value: &str) -> Option<String> {
    let trimmed = value.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

fn parse_sort_order(value: &str) -> Result<SortOrder> {
    match value.trim().to_ascii_lowercase().as_str() {
        "ascending" => Ok(SortOrder::Ascending),
        "descending" => Ok(SortOrder::Descending),
        _ => Err(Error::InvalidValue(format!(
            "sortOrder must be \"ascending\" or \"descending\", not \"{value}\""
        ))),
    }
}

/// Missing or below 1 means 1 (RFC 7644 §3.4.2.4).
fn parse_start_index(value: &str) -> Result<u64> {
    let parsed: i64 = value
        .trim()
        .parse()
        .map_err(|_| Error::InvalidValue(format!("startIndex must be an integer, not \"{value}\"")))?;
    Ok(u64::try_from(parsed).unwrap_or(0).max(1))
}

/// Negative means 0; above the maximum is clamped, not refused (RFC 7644 §3.4.2.4).
fn parse_count(value: &str, limits: PageLimits) -> Result<u64> {
    let parsed: i64 = value
        .trim()
        .parse()
        .map_err(|_| Error::InvalidValue(format!("count must be an integer, not \"{value}\"")))?;
    Ok(u64::try_from(parsed).unwrap_or(0).min(limits.max_count))
}

fn number_text(name: &str, value: &Value) -> Result<String> {
    match value {
        Value::Number(n) => Ok(n.to_string()),
        Value::String(s) => Ok(s.clone()),
        _ => Err(Error::InvalidValue(format!("'{name}' must be an integer"))),
    }
}

fn split_names(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

fn names_value(name: &str, value: &Value) -> Result<Vec<String>> {
    match value {
        Value::String(s) => Ok(split_names(s)),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(|s| s.trim().to_string())
                    .ok_or_else(|| Error::InvalidValue(format!("'{name}' must be a list of attribute names")))
            })
            .collect(),
        _ => Err(Error::InvalidValue(format!("'{name}' must be a list of attribute names"))),
    }
}

/// A ListResponse. `Resources` is always present (Okta's test suite reads it even when empty).
pub fn list_response(total: u64, start_index: u64, resources: Vec<Value>) -> Value {
    let mut out = Map::new();
    out.insert("schemas".into(), Value::Array(vec![Value::String(LIST_RESPONSE_SCHEMA.into())]));
    out.insert("totalResults".into(), Value::from(total));
    out.insert("itemsPerPage".into(), Value::from(resources.len()));
    out.insert("startIndex".into(), Value::from(start_index));
    out.insert("Resources".into(), Value::Array(resources));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMITS: PageLimits = PageLimits { default_count: 100, max_count: 200 };

    fn query(pairs: &[(&str, &str)]) -> Result<ListRequest> {
        let pairs: Vec<(String, String)> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ListRequest::from_query(&pairs, LIMITS)
    }

    #[test]
    fn paging_parameters_follow_rfc_7644_defaults_and_clamps() {
        let r = query(&[]).unwrap();
        assert_eq!((r.start_index, r.count), (1, 100));
        let r = query(&[("startIndex", "0"), ("count", "-5")]).unwrap();
        assert_eq!((r.start_index, r.count), (1, 0));
        let r = query(&[("STARTINDEX", "7"), ("Count", "5000")]).unwrap();
        assert_eq!((r.start_index, r.count), (7, 200));
        assert!(query(&[("count", "ten")]).unwrap_err().to_string().contains("count must be an integer"));
        assert!(query(&[("sortOrder", "up")]).is_err());
    }

    #[test]
    fn search_bodies_accept_names_as_lists_or_strings() {
        let r = ListRequest::from_search_body(
            &json!({"schemas": [], "filter": "title pr", "attributes": ["userName", "emails"],
                    "excludedAttributes": "groups", "startIndex": 3, "count": "2", "sortOrder": "descending"}),
            LIMITS,
        )
        .unwrap();
        assert_eq!(r.filter.as_deref(), Some("title pr"));
        assert_eq!(r.attributes, vec!["userName", "emails"]);
        assert_eq!(r.excluded_attributes, vec!["groups"]);
        assert_eq!((r.start_index, r.count, r.sort_order), (3, 2, Some(SortOrder::Descending)));
        assert!(ListRequest::from_search_body(&json!({"filter": 3}), LIMITS).is_err());
    }
}
