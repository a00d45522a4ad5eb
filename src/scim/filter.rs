//! SCIM filters (RFC 7644 §3.4.2.2): parsed by `scim_v2`, type-checked against the resource
//! schema into a typed AST, printed canonically, and evaluated in memory.
//!
//! [`parse`] patches what `scim_v2` does not accept (`not(` without a space, `$ref` attribute
//! names), maps its errors to [`Error::InvalidFilter`] with a position, and checks every
//! attribute, operator and value against the schema. Its depth and term limits
//! (`scim_v2::filter::MAX_FILTER_DEPTH`, `MAX_FILTER_TERMS`) bound every recursion here.
//!
//! Semantics, shared by [`matches`] and the SQL of `store::filter_sql` (a property test holds
//! them equal):
//! - Values compare by their index encoding ([`index::encode`]): strings folded unless
//!   `caseExact`, dateTimes in canonical UTC form; ordering is by bytes of the encoding.
//! - A multi-valued attribute matches if any value does; `emails[type eq "work" and value co
//!   "x"]` needs one element satisfying the whole bracket.
//! - `ne` is `not eq`: it also matches a resource where the attribute is unassigned (the RFC
//!   leaves this open), and for a multi-valued attribute it means no value is equal.
//! - `pr`: assigned and not empty (`""`, `[]`, `null` are absent); a complex value is present if
//!   one of its sub-attributes is. `eq null` is `not (attr pr)`, `ne null` is `attr pr`.
//! - A complex attribute compared without a sub-attribute compares its `value` sub-attribute
//!   (`emails co "x"` is `emails.value co "x"`); one without `value` (`name`) is rejected.
//! - `attr[...]` is accepted on any complex attribute; a single-valued one (`name[givenName pr]`)
//!   is a list of one element, which exists when any sub-attribute has a value.
//! - `schemas eq "<urn>"`: true for the core schema, and for an extension when any of its
//!   attributes is present; `schemas ne` is its negation. No other operator applies.
//! - Not filterable (400 `invalidFilter`): `returned: never` attributes (`password`),
//!   `meta.location` (derived from the base URL), `meta.version` (per-resource ETag), `meta[...]`,
//!   and `groups` (derived from group membership, which is not indexed on users).
//! - Numbers (no shipped attribute has one) support `eq`, `ne` and `pr` only.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use scim_v2::filter as ast;
use serde_json::{Map, Value};

use super::index;
use super::path::{self, ResolvedAttr};
use super::schema::{AttrType, Attribute, ResourceSchema, Returned};
use crate::error::Error;

/// A comparison operator (RFC 7644 §3.4.2.2 Table 3), without `pr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    pub const ALL: [CompareOp; 9] = [
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Co,
        CompareOp::Sw,
        CompareOp::Ew,
        CompareOp::Gt,
        CompareOp::Ge,
        CompareOp::Lt,
        CompareOp::Le,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Co => "co",
            CompareOp::Sw => "sw",
            CompareOp::Ew => "ew",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }

    pub fn is_ordering(self) -> bool {
        matches!(self, CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le)
    }

    pub fn is_substring(self) -> bool {
        matches!(self, CompareOp::Co | CompareOp::Sw | CompareOp::Ew)
    }

    /// Whether an encoded stored value satisfies `stored <op> operand`.
    pub fn test(self, stored: &str, operand: &str) -> bool {
        match self {
            CompareOp::Eq => stored == operand,
            CompareOp::Ne => stored != operand,
            CompareOp::Co => stored.contains(operand),
            CompareOp::Sw => stored.starts_with(operand),
            CompareOp::Ew => stored.ends_with(operand),
            CompareOp::Gt => stored > operand,
            CompareOp::Ge => stored >= operand,
            CompareOp::Lt => stored < operand,
            CompareOp::Le => stored <= operand,
        }
    }
}

impl From<&ast::CompareOp> for CompareOp {
    fn from(op: &ast::CompareOp) -> Self {
        match op {
            ast::CompareOp::Eq => CompareOp::Eq,
            ast::CompareOp::Ne => CompareOp::Ne,
            ast::CompareOp::Co => CompareOp::Co,
            ast::CompareOp::Sw => CompareOp::Sw,
            ast::CompareOp::Ew => CompareOp::Ew,
            ast::CompareOp::Gt => CompareOp::Gt,
            ast::CompareOp::Ge => CompareOp::Ge,
            ast::CompareOp::Lt => CompareOp::Lt,
            ast::CompareOp::Le => CompareOp::Le,
        }
    }
}

impl fmt::Display for CompareOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A comparison value, normalised as stored values are ([`index::encode`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A string, reference or binary value: folded unless the attribute is `caseExact`.
    Text(String),
    Bool(bool),
    Number(serde_json::Number),
    /// A dateTime, as epoch milliseconds (UTC).
    DateTime(i64),
}

impl Operand {
    /// The index encoding, comparable with [`index::encode`] of stored values.
    pub fn key(&self) -> Cow<'_, str> {
        match self {
            Operand::Text(text) => Cow::Borrowed(text),
            Operand::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Operand::Number(n) => Cow::Owned(n.to_string()),
            Operand::DateTime(millis) => Cow::Owned(index::format_millis(*millis)),
        }
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Text(text) => write_json_string(f, text),
            Operand::Bool(b) => write!(f, "{b}"),
            Operand::Number(n) => write!(f, "{n}"),
            Operand::DateTime(millis) => write_json_string(f, &index::format_millis(*millis)),
        }
    }
}

/// The schema named in `schemas eq "<urn>"`.
#[derive(Debug, Clone, PartialEq)]
pub enum SchemaRef {
    /// The core schema: every resource has it.
    Core(String),
    /// An extension, carried when any of its (top-level) `attributes` is present.
    Extension { urn: String, attributes: Vec<ResolvedAttr> },
}

impl SchemaRef {
    pub fn urn(&self) -> &str {
        match self {
            SchemaRef::Core(urn) | SchemaRef::Extension { urn, .. } => urn,
        }
    }
}

/// A type-checked filter over one resource type.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `attr op value`; `attr` is never complex (see [`ResolvedAttr::compared`]) and `op`
    /// suits its type.
    Compare {
        attr: ResolvedAttr,
        op: CompareOp,
        value: Operand,
    },
    /// `attr pr`.
    Present(ResolvedAttr),
    /// `attr[filter]`: one element of the complex `attr` satisfies `filter`.
    ValuePath {
        attr: ResolvedAttr,
        filter: ValueFilter,
    },
    /// `schemas eq "<urn>"`.
    HasSchema(SchemaRef),
    Not(Box<Filter>),
    /// At least two operands, none of them `And` (as parsed).
    And(Vec<Filter>),
    /// At least two operands, none of them `Or` (as parsed).
    Or(Vec<Filter>),
}

/// A filter inside `attr[...]`, over the sub-attributes of one element. Every `attr` here is a
/// sub-attribute of the bracketed attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueFilter {
    Compare { attr: ResolvedAttr, op: CompareOp, value: Operand },
    Present(ResolvedAttr),
    Not(Box<ValueFilter>),
    And(Vec<ValueFilter>),
    Or(Vec<ValueFilter>),
}

/// Parses and type-checks a filter. Every failure is [`Error::InvalidFilter`] with a detail
/// that says what is wrong and, for syntax errors, where.
pub fn parse(text: &str, schema: &ResourceSchema) -> Result<Filter, Error> {
    let invalid = |detail: String| Error::InvalidFilter(format!("filter: {detail}"));
    let prepared = Prepared::new(text);
    let parsed = ast::Filter::from_str(prepared.text()).map_err(|e| invalid(prepared.describe(&e)))?;
    check(&parsed, schema, &prepared).map_err(invalid)
}

fn check(filter: &ast::Filter, schema: &ResourceSchema, prepared: &Prepared) -> Result<Filter, String> {
    match filter {
        ast::Filter::Attr(exp) => {
            let path = prepared.restore(attr_exp_path(exp));
            if path.uri.is_none() && path.sub_attr.is_none() && path.name.eq_ignore_ascii_case("schemas") {
                return check_schemas(exp, schema);
            }
            let attr = path::resolve(schema, &path)?;
            Ok(match check_term(exp, attr)? {
                Term::Compare(attr, op, value) => Filter::Compare { attr, op, value },
                Term::Present(attr) => Filter::Present(attr),
                Term::Absent(attr) => Filter::Not(Box::new(Filter::Present(attr))),
            })
        }
        ast::Filter::ValuePath(value_path) => {
            let attr = path::resolve(schema, &prepared.restore(&value_path.attr))?;
            check_filterable(&attr)?;
            if !attr.is_complex() {
                return Err(format!("'{attr}' is not a complex attribute, so it cannot take a [filter]"));
            }
            if attr.is_common() {
                return Err(format!("'{attr}[...]' is not supported; filter on '{attr}.created' etc."));
            }
            let filter = check_value_filter(&value_path.filter, &attr, prepared)?;
            Ok(Filter::ValuePath { attr, filter })
        }
        ast::Filter::Not(inner) => Ok(Filter::Not(Box::new(check(inner, schema, prepared)?))),
        ast::Filter::And(items) => {
            items.iter().map(|f| check(f, schema, prepared)).collect::<Result<_, _>>().map(Filter::And)
        }
        ast::Filter::Or(items) => {
            items.iter().map(|f| check(f, schema, prepared)).collect::<Result<_, _>>().map(Filter::Or)
        }
    }
}

/// Type-checks the filter inside `parent[...]` (also for PATCH paths).
pub(crate) fn check_value_filter(
    filter: &ast::ValFilter,
    parent: &ResolvedAttr,
    prepared: &Prepared,
) -> Result<ValueFilter, String> {
    match filter {
        ast::ValFilter::Attr(exp) => {
            let path = prepared.restore(attr_exp_path(exp));
            if path.uri.is_some() || path.sub_attr.is_some() {
                return Err(format!(
                    "'{}' inside '{parent}[...]' must be the name of one of its sub-attributes",
                    prepared.restore_text(&path.to_string())
                ));
            }
            let attr = parent.sub_attribute(&path.name)?;
            Ok(match check_term(exp, attr)? {
                Term::Compare(attr, op, value) => ValueFilter::Compare { attr, op, value },
                Term::Present(attr) => ValueFilter::Present(attr),
                Term::Absent(attr) => ValueFilter::Not(Box::new(ValueFilter::Present(attr))),
            })
        }
        ast::ValFilter::Not(inner) => {
            Ok(ValueFilter::Not(Box::new(check_value_filter(inner, parent, prepared)?)))
        }
        ast::ValFilter::And(items) => items
            .iter()
            .map(|f| check_value_filter(f, parent, prepared))
            .collect::<Result<_, _>>()
            .map(ValueFilter::And),
        ast::ValFilter::Or(items) => items
            .iter()
            .map(|f| check_value_filter(f, parent, prepared))
            .collect::<Result<_, _>>()
            .map(ValueFilter::Or),
    }
}

fn attr_exp_path(exp: &ast::AttrExp) -> &ast::AttrPath {
    match exp {
        ast::AttrExp::Present(path) | ast::AttrExp::Comparison(path, _, _) => path,
    }
}

/// One attribute expression, checked; shared by filters and value filters.
enum Term {
    Compare(ResolvedAttr, CompareOp, Operand),
    Present(ResolvedAttr),
    /// `eq null`.
    Absent(ResolvedAttr),
}

fn check_term(exp: &ast::AttrExp, attr: ResolvedAttr) -> Result<Term, String> {
    check_filterable(&attr)?;
    let (op, value) = match exp {
        ast::AttrExp::Present(_) => return Ok(Term::Present(attr)),
        ast::AttrExp::Comparison(_, op, value) => (CompareOp::from(op), value),
    };
    if let ast::CompValue::Null = value {
        return match op {
            CompareOp::Eq => Ok(Term::Absent(attr)),
            CompareOp::Ne => Ok(Term::Present(attr)),
            _ => Err(format!("'{attr} {op} null': null can only be compared with eq or ne")),
        };
    }
    let Some(compared) = attr.compared() else {
        let example = attr.def().sub_attributes.first().map(|s| format!(", e.g. '{attr}.{}'", s.name));
        return Err(format!(
            "'{attr}' is a complex attribute without a value sub-attribute: compare one of its \
             sub-attributes{}",
            example.unwrap_or_default()
        ));
    };
    check_operator(&compared, op)?;
    let operand = check_operand(&compared, value)?;
    Ok(Term::Compare(compared, op, operand))
}

fn check_filterable(attr: &ResolvedAttr) -> Result<(), String> {
    if attr.def().returned == Returned::Never || attr.attribute_def().returned == Returned::Never {
        return Err(format!("'{attr}' is never returned, so it cannot be used in a filter"));
    }
    if attr.is_common() && matches!(attr.sub_name(), Some("location" | "version")) {
        return Err(format!("'{attr}' cannot be used in a filter; filter on 'id' instead"));
    }
    if attr.schema().is_none() && attr.name() == "groups" {
        return Err(
            "'groups' cannot be used in a filter here; filter /Groups on 'members.value' instead".into()
        );
    }
    Ok(())
}

fn check_operator(attr: &ResolvedAttr, op: CompareOp) -> Result<(), String> {
    let refused = match attr.kind() {
        AttrType::Boolean => (op != CompareOp::Eq && op != CompareOp::Ne).then_some("use eq, ne or pr"),
        AttrType::Binary => op.is_ordering().then_some("use eq, ne, co, sw, ew or pr"),
        AttrType::DateTime => op.is_substring().then_some("use eq, ne, gt, ge, lt, le or pr"),
        AttrType::Integer | AttrType::Decimal => {
            (op.is_substring() || op.is_ordering()).then_some("numbers support eq, ne and pr")
        }
        AttrType::String | AttrType::Reference | AttrType::Complex => None,
    };
    match refused {
        Some(hint) => Err(format!("'{attr}' is {}: '{op}' does not apply ({hint})", type_name(attr.kind()))),
        None => Ok(()),
    }
}

fn check_operand(attr: &ResolvedAttr, value: &ast::CompValue) -> Result<Operand, String> {
    let kind = attr.kind();
    let mismatch =
        |wanted: &str| format!("'{attr}' is {}; compare it with {wanted}, not {value}", type_name(kind));
    match (kind, value) {
        (AttrType::Boolean, ast::CompValue::True) => Ok(Operand::Bool(true)),
        (AttrType::Boolean, ast::CompValue::False) => Ok(Operand::Bool(false)),
        (AttrType::Boolean, _) => Err(mismatch("true or false")),
        (AttrType::String | AttrType::Reference | AttrType::Binary, ast::CompValue::Str(text)) => {
            if text.contains('\0') {
                return Err(format!("the value compared with '{attr}' contains a NUL character"));
            }
            index::encode(attr.def(), &Value::String(text.clone()))
                .map(Operand::Text)
                .ok_or_else(|| mismatch("a quoted string"))
        }
        (AttrType::String | AttrType::Reference | AttrType::Binary, _) => Err(mismatch("a quoted string")),
        (AttrType::DateTime, ast::CompValue::Str(text)) => chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| Operand::DateTime(t.timestamp_millis()))
            .map_err(|_| {
                format!(
                    "'{attr}' is a dateTime, and {value} is not one; use an xsd:dateTime with a time \
                     zone, e.g. \"2026-01-31T09:30:00Z\""
                )
            }),
        (AttrType::DateTime, _) => Err(mismatch("a quoted dateTime such as \"2026-01-31T09:30:00Z\"")),
        (AttrType::Integer | AttrType::Decimal, ast::CompValue::Number(n)) => Ok(Operand::Number(n.clone())),
        (AttrType::Integer | AttrType::Decimal, _) => Err(mismatch("a number")),
        (AttrType::Complex, _) => Err(format!("'{attr}' is complex; compare one of its sub-attributes")),
    }
}

fn check_schemas(exp: &ast::AttrExp, schema: &ResourceSchema) -> Result<Filter, String> {
    let (op, urn) = match exp {
        ast::AttrExp::Comparison(_, op, ast::CompValue::Str(urn)) => (CompareOp::from(op), urn),
        _ => return Err("only 'schemas eq \"<schema URN>\"' (or ne) is supported on 'schemas'".into()),
    };
    if op != CompareOp::Eq && op != CompareOp::Ne {
        return Err(format!("'schemas {op}' is not supported; use 'schemas eq \"<schema URN>\"' or ne"));
    }
    let named = schema.schema(urn).ok_or_else(|| format!("unknown schema '{urn}' in 'schemas {op}'"))?;
    let schema_ref = if schema.is_extension(&named.id) {
        let attributes = named
            .attributes
            .iter()
            .map(|a| {
                let path =
                    ast::AttrPath { uri: Some(named.id.clone()), name: a.name.clone(), sub_attr: None };
                path::resolve(schema, &path)
            })
            .collect::<Result<_, _>>()?;
        SchemaRef::Extension { urn: named.id.clone(), attributes }
    } else {
        SchemaRef::Core(named.id.clone())
    };
    let has_schema = Filter::HasSchema(schema_ref);
    Ok(if op == CompareOp::Ne { Filter::Not(Box::new(has_schema)) } else { has_schema })
}

fn type_name(kind: AttrType) -> &'static str {
    match kind {
        AttrType::String => "a string",
        AttrType::Boolean => "a boolean",
        AttrType::Decimal | AttrType::Integer => "a number",
        AttrType::DateTime => "a dateTime",
        AttrType::Binary => "binary",
        AttrType::Reference => "a reference",
        AttrType::Complex => "complex",
    }
}

// --- Printing: canonical text that parses back to the same filter. ---

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::Compare { attr, op, value } => write!(f, "{attr} {op} {value}"),
            Filter::Present(attr) => write!(f, "{attr} pr"),
            Filter::ValuePath { attr, filter } => write!(f, "{attr}[{filter}]"),
            Filter::HasSchema(schema) => {
                f.write_str("schemas eq ")?;
                write_json_string(f, schema.urn())
            }
            Filter::Not(inner) => write!(f, "not ({inner})"),
            Filter::And(items) => {
                write_joined(f, items, " and ", |i| matches!(i, Filter::And(_) | Filter::Or(_)))
            }
            Filter::Or(items) => write_joined(f, items, " or ", |i| matches!(i, Filter::Or(_))),
        }
    }
}

impl fmt::Display for ValueFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn sub(attr: &ResolvedAttr) -> &str {
            attr.sub_name().unwrap_or(attr.name())
        }
        match self {
            ValueFilter::Compare { attr, op, value } => write!(f, "{} {op} {value}", sub(attr)),
            ValueFilter::Present(attr) => write!(f, "{} pr", sub(attr)),
            ValueFilter::Not(inner) => write!(f, "not ({inner})"),
            ValueFilter::And(items) => {
                write_joined(f, items, " and ", |i| matches!(i, ValueFilter::And(_) | ValueFilter::Or(_)))
            }
            ValueFilter::Or(items) => write_joined(f, items, " or ", |i| matches!(i, ValueFilter::Or(_))),
        }
    }
}

fn write_joined<T: fmt::Display>(
    f: &mut fmt::Formatter<'_>,
    items: &[T],
    separator: &str,
    needs_parentheses: impl Fn(&T) -> bool,
) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(separator)?;
        }
        if needs_parentheses(item) {
            write!(f, "({item})")?;
        } else {
            write!(f, "{item}")?;
        }
    }
    Ok(())
}

/// A JSON string literal (the filter grammar's string syntax).
fn write_json_string(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in text.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if u32::from(c) < 0x20 => write!(f, "\\u{:04x}", u32::from(c))?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

// --- Evaluation over a rendered resource. ---

/// Whether a full rendered resource (with `id`, `externalId`, `meta`, core attributes under
/// their canonical names and extensions under their URN) satisfies the filter.
pub fn matches(filter: &Filter, resource: &Map<String, Value>) -> bool {
    match filter {
        Filter::Compare { attr, op, value } => {
            let found =
                |op: CompareOp| leaf_values(attr, resource).into_iter().any(|v| test(attr, op, value, v));
            match op {
                CompareOp::Ne => !found(CompareOp::Eq),
                op => found(*op),
            }
        }
        Filter::Present(attr) => is_present(attr, resource),
        Filter::ValuePath { attr, filter } => {
            elements(attr, resource).into_iter().any(|e| value_matches(filter, e))
        }
        Filter::HasSchema(SchemaRef::Core(_)) => true,
        Filter::HasSchema(SchemaRef::Extension { attributes, .. }) => {
            attributes.iter().any(|attr| is_present(attr, resource))
        }
        Filter::Not(inner) => !matches(inner, resource),
        Filter::And(items) => items.iter().all(|f| matches(f, resource)),
        Filter::Or(items) => items.iter().any(|f| matches(f, resource)),
    }
}

/// Whether one element of a complex attribute satisfies a value filter (PATCH value paths).
pub fn value_matches(filter: &ValueFilter, element: &Value) -> bool {
    let field = |attr: &ResolvedAttr| attr.sub_name().and_then(|name| element.as_object()?.get(name));
    match filter {
        ValueFilter::Compare { attr, op, value } => {
            let found = |op: CompareOp| field(attr).is_some_and(|v| test(attr, op, value, v));
            match op {
                CompareOp::Ne => !found(CompareOp::Eq),
                op => found(*op),
            }
        }
        ValueFilter::Present(attr) => field(attr).is_some_and(|v| is_present_leaf(attr.def(), v)),
        ValueFilter::Not(inner) => !value_matches(inner, element),
        ValueFilter::And(items) => items.iter().all(|f| value_matches(f, element)),
        ValueFilter::Or(items) => items.iter().any(|f| value_matches(f, element)),
    }
}

/// The value of a value filter that is exactly `type eq "<value>"` (as its comparison key,
/// i.e. folded), which PATCH uses to create the element an unmatched path names.
pub fn single_type_equality(filter: &ValueFilter) -> Option<String> {
    match filter {
        ValueFilter::Compare { attr, op: CompareOp::Eq, value: Operand::Text(value) }
            if attr.sub_name() == Some("type") =>
        {
            Some(value.clone())
        }
        _ => None,
    }
}

fn test(attr: &ResolvedAttr, op: CompareOp, operand: &Operand, value: &Value) -> bool {
    index::encode(attr.def(), value).is_some_and(|stored| op.test(&stored, &operand.key()))
}

/// The values of the top-level attribute: its elements if it is multi-valued, else itself.
/// Mirrors `index::entries`, so memory and SQL see the same values.
fn outer_values<'r>(attr: &ResolvedAttr, resource: &'r Map<String, Value>) -> Vec<&'r Value> {
    match (attr.attribute_def().multi_valued, attr.attribute_value(resource)) {
        (_, None) => Vec::new(),
        (true, Some(Value::Array(items))) => items.iter().collect(),
        (_, Some(value)) => vec![value],
    }
}

/// The leaf values a comparison on `attr` looks at.
fn leaf_values<'r>(attr: &ResolvedAttr, resource: &'r Map<String, Value>) -> Vec<&'r Value> {
    let outer = outer_values(attr, resource);
    match attr.sub_name() {
        None => outer,
        Some(sub) => outer.into_iter().filter_map(|v| v.as_object()?.get(sub)).collect(),
    }
}

/// The elements a value path ranges over: each item of a multi-valued attribute (the index has
/// a marker row per item), or a single complex value when one of its sub-attributes is stored.
fn elements<'r>(attr: &ResolvedAttr, resource: &'r Map<String, Value>) -> Vec<&'r Value> {
    let def = attr.attribute_def();
    match (def.multi_valued, attr.attribute_value(resource)) {
        (true, Some(Value::Array(items))) => items.iter().collect(),
        (false, Some(value @ Value::Object(fields))) => {
            let stored = def
                .sub_attributes
                .iter()
                .any(|sub| fields.get(&sub.name).and_then(|v| index::encode(sub, v)).is_some());
            if stored {
                vec![value]
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    }
}

fn is_present(attr: &ResolvedAttr, resource: &Map<String, Value>) -> bool {
    if attr.is_complex() {
        let subs = &attr.def().sub_attributes;
        outer_values(attr, resource).into_iter().filter_map(Value::as_object).any(|fields| {
            subs.iter().any(|sub| fields.get(&sub.name).is_some_and(|v| is_present_leaf(sub, v)))
        })
    } else {
        leaf_values(attr, resource).into_iter().any(|v| is_present_leaf(attr.def(), v))
    }
}

fn is_present_leaf(def: &Attribute, value: &Value) -> bool {
    index::encode(def, value).is_some_and(|key| !key.is_empty())
}

// --- Text preparation and syntax errors, shared with PATCH paths. ---

/// A name `scim_v2`'s lexer accepts in place of `$ref`; no schema has an attribute so named.
const REF_PLACEHOLDER: &str = "scimdDollarRef";

/// Filter or path text rewritten for `scim_v2` (outside string literals only): `not(` gets its
/// space, `$ref` becomes [`REF_PLACEHOLDER`], and two Entra forms become standard ones:
/// a bare value after an operator is a string (`externalId eq jyoung` →
/// `externalId eq "jyoung"`; numbers, `true`, `false` and `null` stay), and a comparison on a
/// sub-attribute of a filtered element moves into the brackets
/// (`emails[type eq "work"].value eq "x"` → `emails[(type eq "work") and value eq "x"]`).
/// Remembers where each byte came from, so errors point into the text the client sent.
pub(crate) struct Prepared {
    text: String,
    /// Per byte of `text`, plus one for its end: the character position in the original.
    origin: Vec<usize>,
}

impl Prepared {
    pub(crate) fn new(input: &str) -> Self {
        let leading = input.chars().take_while(|c| c.is_whitespace()).count();
        let chars: Vec<char> = input.trim().chars().collect();
        let mut prepared = Prepared { text: String::with_capacity(input.len() + 8), origin: Vec::new() };
        let mut in_string = false;
        let mut escaped = false;
        // Byte offsets in `text` of the `[` still open, and where a moved `]` goes (see above).
        let mut open_brackets: Vec<usize> = Vec::new();
        let mut close_bracket_at: Option<usize> = None;
        let mut i = 0;
        while let Some(&c) = chars.get(i) {
            if close_bracket_at == Some(i) {
                prepared.push(']', i);
                close_bracket_at = None;
            }
            if in_string {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    in_string = false;
                }
            } else if c == '"' {
                in_string = true;
            } else if c == '$' && is_ref_at(&chars, i) {
                prepared.push_str(REF_PLACEHOLDER, i);
                i += 4;
                continue;
            } else if c == '[' {
                open_brackets.push(prepared.text.len());
            } else if c == ']' {
                let open = open_brackets.pop();
                if let (Some(open), Some(end), None) =
                    (open, sub_comparison_end(&chars, i + 1), close_bracket_at)
                {
                    prepared.insert('(', open + 1, i);
                    prepared.push_str(") and ", i);
                    close_bracket_at = Some(end);
                    // Continue with the sub-attribute name, after the '.'.
                    i += 2;
                    continue;
                }
            } else if let Some((value_start, value_end)) = bare_value_after_operator(&chars, i) {
                for (offset, c) in chars.iter().enumerate().take(value_start).skip(i) {
                    prepared.push(*c, offset);
                }
                prepared.push('"', value_start);
                for (offset, c) in chars.iter().enumerate().take(value_end).skip(value_start) {
                    prepared.push(*c, offset);
                }
                prepared.push('"', value_end);
                i = value_end;
                continue;
            } else if is_not_parenthesis_at(&chars, i) {
                for (offset, c) in chars.iter().skip(i).take(3).enumerate() {
                    prepared.push(*c, i + offset);
                }
                prepared.push(' ', i + 3);
                i += 3;
                continue;
            }
            prepared.push(c, i);
            i += 1;
        }
        if close_bracket_at.is_some() {
            prepared.push(']', chars.len());
        }
        prepared.origin.push(chars.len());
        // Positions refer to the text as sent, leading whitespace included.
        prepared.origin.iter_mut().for_each(|o| *o += leading);
        prepared
    }

    fn push(&mut self, c: char, origin: usize) {
        self.text.push(c);
        self.origin.extend(std::iter::repeat_n(origin, c.len_utf8()));
    }

    fn insert(&mut self, c: char, at: usize, origin: usize) {
        self.text.insert(at, c);
        for _ in 0..c.len_utf8() {
            self.origin.insert(at, origin);
        }
    }

    fn push_str(&mut self, s: &str, origin: usize) {
        self.text.push_str(s);
        self.origin.extend(std::iter::repeat_n(origin, s.len()));
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// A parsed path with `$ref` put back.
    pub(crate) fn restore<'p>(&self, path: &'p ast::AttrPath) -> Cow<'p, ast::AttrPath> {
        let is_placeholder = |s: &str| s == REF_PLACEHOLDER;
        if !is_placeholder(&path.name) && !path.sub_attr.as_deref().is_some_and(is_placeholder) {
            return Cow::Borrowed(path);
        }
        Cow::Owned(ast::AttrPath {
            uri: path.uri.clone(),
            name: self.restore_name(&path.name),
            sub_attr: path.sub_attr.as_deref().map(|s| self.restore_name(s)),
        })
    }

    pub(crate) fn restore_name(&self, name: &str) -> String {
        if name == REF_PLACEHOLDER {
            "$ref".to_string()
        } else {
            name.to_string()
        }
    }

    fn restore_text(&self, text: &str) -> String {
        text.replace(REF_PLACEHOLDER, "$ref")
    }

    /// 1-based character position in the original text of a byte offset in `text`.
    fn position(&self, byte: usize) -> usize {
        self.origin.get(byte).or(self.origin.last()).copied().unwrap_or(0) + 1
    }

    /// The word before a byte offset, to say "after 'title'".
    fn word_before(&self, byte: usize) -> String {
        let before = self.text.get(..byte).unwrap_or_default().trim_end();
        let word =
            before.rsplit(|c: char| c.is_whitespace() || c == '(' || c == '[').next().unwrap_or_default();
        let word = if word.is_empty() {
            before.chars().last().map(String::from).unwrap_or_default()
        } else {
            word.to_string()
        };
        shorten(&self.restore_text(&word))
    }

    /// A syntax error in plain words, with its position in the original text.
    pub(crate) fn describe(&self, error: &ast::ParseError) -> String {
        match error {
            ast::ParseError::UnrecognizedEof { location, expected } => {
                if self.text.is_empty() {
                    return "empty; write an expression such as userName eq \"alice\"".to_string();
                }
                format!(
                    "expected {} after '{}' at position {}",
                    expected_phrase(expected),
                    self.word_before(*location),
                    self.position(*location)
                )
            }
            ast::ParseError::UnrecognizedToken { token: (start, found, end), expected } => {
                let found = self.restore_text(found.trim());
                let rest = self.text.get(*end..).unwrap_or_default().trim();
                if let Some(follow) = keyword_expected(&found, expected) {
                    return if rest.is_empty() {
                        format!("expected {follow} after '{found}' at position {}", self.position(*end))
                    } else {
                        format!("'{found}' at position {} needs a space on each side", self.position(*start))
                    };
                }
                let before = self.word_before(*start);
                let after = if before.is_empty() { String::new() } else { format!(" after '{before}'") };
                format!(
                    "expected {}{after} at position {}, found '{}'",
                    expected_phrase(expected),
                    self.position(*start),
                    shorten(&found)
                )
            }
            ast::ParseError::InvalidToken { location } => {
                let position = self.position(*location);
                match self.text.get(*location..).and_then(|rest| rest.chars().next()) {
                    Some('"') => format!("unterminated string starting at position {position}"),
                    Some('\'') => format!("strings must be in double quotes (position {position})"),
                    Some(c) => format!("unexpected character '{c}' at position {position}"),
                    None => format!("unexpected end at position {position}"),
                }
            }
            ast::ParseError::ExtraToken { token: (start, found, _) } => {
                format!(
                    "unexpected '{}' at position {}",
                    shorten(&self.restore_text(found.trim())),
                    self.position(*start)
                )
            }
            ast::ParseError::User { error } => match error {
                ast::FilterActionError::InvalidAttrPath(path) => format!(
                    "'{}' has more than one sub-attribute (at most 'attribute.subAttribute')",
                    shorten(&self.restore_text(path))
                ),
                ast::FilterActionError::InvalidAttrName(path) => format!(
                    "'{}' is not a valid attribute path: names start with a letter and contain only \
                     letters, digits, '-' and '_'",
                    shorten(&self.restore_text(path))
                ),
                ast::FilterActionError::InvalidCompValue(e) => {
                    format!("invalid string or number value ({e})")
                }
                ast::FilterActionError::DepthExceeded(_) => {
                    format!("nested more than {} levels deep", ast::MAX_FILTER_DEPTH)
                }
                ast::FilterActionError::TooManyTerms(_) => {
                    format!("more than {} comparisons; split the query", ast::MAX_FILTER_TERMS)
                }
                other => other.to_string(),
            },
        }
    }
}

/// Names for the terminals in `scim_v2`'s grammar, as its errors list them.
mod lalrpop_error {
    pub(super) const OPERATORS: [&str; 10] = ["eq", "ne", "co", "sw", "ew", "gt", "lt", "ge", "le", "pr"];

    pub(super) fn has(expected: &[String], terminal: &str) -> bool {
        expected.iter().any(|e| e == terminal)
    }

    pub(super) fn quoted(word: &str) -> String {
        format!("\"{word}\"")
    }
}

/// When the parser wanted a keyword and found the same word lexed as a name (no space around
/// it), what should follow it.
fn keyword_expected(found: &str, expected: &[String]) -> Option<&'static str> {
    use lalrpop_error::*;
    let word = found.to_ascii_lowercase();
    if !has(expected, &quoted(&word)) {
        return None;
    }
    if OPERATORS.contains(&word.as_str()) {
        Some("a value")
    } else if word == "and" || word == "or" {
        Some("a filter")
    } else {
        None
    }
}

fn expected_phrase(expected: &[String]) -> String {
    use lalrpop_error::*;
    let has = |terminal: &str| has(expected, terminal);
    let mut phrases = Vec::new();
    if has("AttrNameTok") || has("AttrPathTok") {
        phrases.push("an attribute name");
    }
    if has("\"not\"") {
        phrases.push("'not'");
    }
    if has("\"(\"") {
        phrases.push("'('");
    }
    if OPERATORS.iter().any(|op| has(&quoted(op))) {
        phrases.push("an operator");
    } else if has("\"[\"") {
        phrases.push("'['");
    }
    if ["StringLit", "NumberLit", "\"true\"", "\"false\"", "\"null\""].iter().any(|t| has(t)) {
        phrases.push("a value (a \"string\", a number, true, false or null)");
    }
    for (terminal, phrase) in
        [("\"and\"", "'and'"), ("\"or\"", "'or'"), ("\")\"", "')'"), ("\"]\"", "']'"), ("\".\"", "'.'")]
    {
        if has(terminal) {
            phrases.push(phrase);
        }
    }
    match phrases.split_last() {
        None => "something else".to_string(),
        Some((last, [])) => (*last).to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

fn shorten(text: &str) -> String {
    const MAX: usize = 40;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(MAX).collect::<String>())
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// `$ref` as a whole attribute name at `i`.
fn is_ref_at(chars: &[char], i: usize) -> bool {
    let word: String = chars.iter().skip(i + 1).take(3).collect();
    word.eq_ignore_ascii_case("ref") && !chars.get(i + 4).is_some_and(|c| is_name_char(*c))
}

const COMPARE_OPERATORS: [&str; 9] = ["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"];

/// Whether `i` starts a word (nothing or a separator before it).
fn starts_word(chars: &[char], i: usize) -> bool {
    match i.checked_sub(1).and_then(|p| chars.get(p)) {
        None => true,
        Some(c) => c.is_whitespace() || *c == '(' || *c == '[',
    }
}

/// The end (exclusive) of the word starting at `i`.
fn word_end(chars: &[char], i: usize) -> usize {
    let mut end = i;
    while chars.get(end).is_some_and(|c| !c.is_whitespace() && *c != ')' && *c != ']' && *c != '"') {
        end += 1;
    }
    end
}

fn skip_spaces(chars: &[char], mut i: usize) -> usize {
    while chars.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    i
}

/// At a comparison operator followed by an unquoted value that is not a number, `true`,
/// `false` or `null`: where that value starts and ends.
fn bare_value_after_operator(chars: &[char], i: usize) -> Option<(usize, usize)> {
    if !starts_word(chars, i) {
        return None;
    }
    let op_end = word_end(chars, i);
    let op: String = chars.get(i..op_end)?.iter().collect();
    if !COMPARE_OPERATORS.iter().any(|known| op.eq_ignore_ascii_case(known)) {
        return None;
    }
    let value_start = skip_spaces(chars, op_end);
    // A quote starts a string (single quotes get their own error), `(` a sub-expression.
    if value_start == op_end || chars.get(value_start).is_none_or(|c| matches!(c, '"' | '\'' | '(')) {
        return None;
    }
    let value_end = word_end(chars, value_start);
    let value: String = chars.get(value_start..value_end)?.iter().collect();
    let literal = ["true", "false", "null"].iter().any(|l| value.eq_ignore_ascii_case(l))
        || serde_json::from_str::<serde_json::Number>(&value).is_ok();
    (!value.is_empty() && !literal).then_some((value_start, value_end))
}

/// After a `]` at `i - 1`: if `.sub op value` (or `.sub pr`) follows, where it ends.
fn sub_comparison_end(chars: &[char], i: usize) -> Option<usize> {
    if chars.get(i) != Some(&'.') {
        return None;
    }
    let name_end = word_end(chars, i + 1);
    let name: String = chars.get(i + 1..name_end)?.iter().collect();
    if name.is_empty() || !name.chars().all(is_name_char) {
        return None;
    }
    let op_start = skip_spaces(chars, name_end);
    let op_end = word_end(chars, op_start);
    if op_start == name_end || op_end == op_start {
        return None;
    }
    let op: String = chars.get(op_start..op_end)?.iter().collect();
    if op.eq_ignore_ascii_case("pr") {
        return Some(op_end);
    }
    if !COMPARE_OPERATORS.iter().any(|known| op.eq_ignore_ascii_case(known)) {
        return None;
    }
    let value_start = skip_spaces(chars, op_end);
    if value_start == op_end {
        return None;
    }
    if chars.get(value_start) != Some(&'"') {
        let end = word_end(chars, value_start);
        return (end > value_start).then_some(end);
    }
    // A string literal, escapes included.
    let mut j = value_start + 1;
    let mut escaped = false;
    while let Some(&c) = chars.get(j) {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => escaped = true,
            (false, '"') => return Some(j + 1),
            _ => {}
        }
        j += 1;
    }
    None
}

/// The keyword `not` at `i`, directly followed by `(`.
fn is_not_parenthesis_at(chars: &[char], i: usize) -> bool {
    let starts_token = match i.checked_sub(1).and_then(|p| chars.get(p)) {
        None => true,
        Some(c) => c.is_whitespace() || *c == '(' || *c == '[',
    };
    let word: String = chars.iter().skip(i).take(3).collect();
    starts_token && word.eq_ignore_ascii_case("not") && chars.get(i + 3) == Some(&'(')
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use crate::scim::schema::{Registry, ENTERPRISE_USER_SCHEMA};
    use proptest::prelude::*;
    use serde_json::json;

    fn user() -> ResourceSchema {
        Registry::load().unwrap().user
    }

    fn ok(text: &str) -> Filter {
        parse(text, &user()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn detail(text: &str) -> String {
        match parse(text, &user()) {
            Err(Error::InvalidFilter(detail)) => detail,
            other => panic!("{text}: expected invalidFilter, got {other:?}"),
        }
    }

    fn bjensen() -> Map<String, Value> {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE_USER_SCHEMA],
            "id": "2819c223-7f76-453a-919d-413861904646",
            "externalId": "bjensen",
            "meta": {
                "resourceType": "User",
                "created": "2011-08-01T18:29:49.793Z",
                "lastModified": "2011-08-01T18:29:49.793Z",
            },
            "userName": "bjensen",
            "name": {"formatted": "Ms. Barbara J Jensen III", "familyName": "O'Malley", "givenName": "Barbara"},
            "displayName": "Babs Jensen",
            "title": "Tour Guide",
            "userType": "Employee",
            "active": true,
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            "ims": [{"value": "babs@foo.com", "type": "xmpp"}],
            "phoneNumbers": [],
            ENTERPRISE_USER_SCHEMA: {"department": "Tour Operations", "manager": {"value": "26118915-6090"}}
        })
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn rfc_7644_example_filters_parse_print_canonically_and_match() {
        // RFC 7644 §3.4.2.2 Figure 2, each with its canonical form and whether bjensen matches.
        let cases = [
            (r#"userName eq "bjensen""#, r#"userName eq "bjensen""#, true),
            (r#"name.familyName co "O'Malley""#, r#"name.familyName co "o'malley""#, true),
            (r#"userName sw "J""#, r#"userName sw "j""#, false),
            (r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J""#, r#"userName sw "j""#, false),
            ("title pr", "title pr", true),
            (
                r#"meta.lastModified gt "2011-05-13T04:42:34Z""#,
                r#"meta.lastModified gt "2011-05-13T04:42:34.000Z""#,
                true,
            ),
            (
                r#"meta.lastModified ge "2011-05-13T04:42:34Z""#,
                r#"meta.lastModified ge "2011-05-13T04:42:34.000Z""#,
                true,
            ),
            (
                r#"meta.lastModified lt "2011-05-13T04:42:34Z""#,
                r#"meta.lastModified lt "2011-05-13T04:42:34.000Z""#,
                false,
            ),
            (
                r#"meta.lastModified le "2011-05-13T04:42:34Z""#,
                r#"meta.lastModified le "2011-05-13T04:42:34.000Z""#,
                false,
            ),
            (r#"title pr and userType eq "Employee""#, r#"title pr and userType eq "employee""#, true),
            (r#"title pr or userType eq "Intern""#, r#"title pr or userType eq "intern""#, true),
            (
                r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#,
                r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#,
                true,
            ),
            (
                r#"userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")"#,
                r#"userType eq "employee" and (emails.value co "example.com" or emails.value co "example.org")"#,
                true,
            ),
            (
                r#"userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")"#,
                r#"userType ne "employee" and not (emails.value co "example.com" or emails.value co "example.org")"#,
                false,
            ),
            (
                r#"userType eq "Employee" and (emails.type eq "work")"#,
                r#"userType eq "employee" and emails.type eq "work""#,
                true,
            ),
            (
                r#"userType eq "Employee" and emails[type eq "work" and value co "@example.com"]"#,
                r#"userType eq "employee" and emails[type eq "work" and value co "@example.com"]"#,
                true,
            ),
            (
                r#"emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]"#,
                r#"emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]"#,
                true,
            ),
        ];
        let schema = user();
        let resource = bjensen();
        for (text, canonical, expected) in cases {
            let filter = parse(text, &schema).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(filter.to_string(), canonical, "{text}");
            assert_eq!(parse(canonical, &schema).unwrap(), filter, "{text}");
            assert_eq!(matches(&filter, &resource), expected, "{text}");
        }
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let Filter::Or(items) = ok(r#"title pr or userType eq "x" and active eq true"#) else { panic!() };
        assert!(matches!(items.as_slice(), [Filter::Present(_), Filter::And(and)] if and.len() == 2));
        let Filter::And(items) = ok(r#"(title pr or userType eq "x") and active eq true"#) else { panic!() };
        assert!(matches!(items.as_slice(), [Filter::Or(_), Filter::Compare { .. }]));
        assert_eq!(
            ok(r#"(title pr or userType eq "x") and active eq true"#).to_string(),
            r#"(title pr or userType eq "x") and active eq true"#
        );
    }

    #[test]
    fn names_operators_and_keywords_are_case_insensitive() {
        let canonical = ok(r#"userName eq "x" and not (title pr) or emails[type eq "work"]"#);
        for text in [
            r#"USERNAME EQ "x" AND NOT (TITLE PR) OR EMAILS[TYPE EQ "work"]"#,
            r#"username Eq "X" And Not (Title Pr) Or Emails[Type eQ "WORK"]"#,
            r#"urn:ietf:params:scim:schemas:core:2.0:user:UserName eq "x" and not(title pr) or emails[type eq "work"]"#,
        ] {
            assert_eq!(ok(text), canonical, "{text}");
        }
        assert_eq!(
            ok(r#"URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER:MANAGER.DISPLAYNAME eq "x""#)
                .to_string(),
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.displayName eq "x""#
        );
    }

    #[test]
    fn wrapper_accepts_not_without_a_space_and_ref_names() {
        assert_eq!(ok(r#"not(title pr)"#), ok(r#"not (title pr)"#));
        assert_eq!(ok(r#"title pr and NOT(userType pr)"#), ok(r#"title pr and not (userType pr)"#));
        assert_eq!(ok(r#"emails[not(type eq "work")]"#).to_string(), r#"emails[not (type eq "work")]"#);
        // Inside strings nothing is rewritten.
        let Filter::Compare { value, .. } = ok(r#"title eq "not(x) $ref""#) else { panic!() };
        assert_eq!(value, Operand::Text("not(x) $ref".into()));
        let manager = ok(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.$ref eq "https://x/Users/1""#,
        );
        assert_eq!(
            manager.to_string(),
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.$ref eq "https://x/Users/1""#
        );
        assert_eq!(ok(&manager.to_string()), manager);
        let group = Registry::load().unwrap().group;
        let members = parse(r#"members[$REF eq "https://x/Users/1" and type eq "User"]"#, &group).unwrap();
        assert_eq!(members.to_string(), r#"members[$ref eq "https://x/Users/1" and type eq "user"]"#);
        assert!(detail(r#"notes(title pr)"#).contains("position"));
    }

    #[test]
    fn null_is_absence_and_only_with_eq_or_ne() {
        assert_eq!(ok("title eq null"), ok("not (title pr)"));
        assert_eq!(ok("title ne null"), ok("title pr"));
        assert_eq!(ok("emails eq null").to_string(), "not (emails pr)");
        assert_eq!(ok("emails[type eq null]").to_string(), "emails[not (type pr)]");
        assert!(detail("title gt null").contains("null can only be compared with eq or ne"));
    }

    #[test]
    fn type_errors_name_the_attribute_and_operator() {
        let cases = [
            (r#"nosuch eq "x""#, "unknown attribute 'nosuch'"),
            (r#"name.nosuch eq "x""#, "'name' has no sub-attribute 'nosuch'"),
            (r#"emails[nosuch eq "x"]"#, "'emails' has no sub-attribute 'nosuch'"),
            (r#"emails[value.x eq "x"]"#, "must be the name of one of its sub-attributes"),
            ("active gt true", "'active' is a boolean: 'gt' does not apply"),
            ("active co true", "'active' is a boolean: 'co' does not apply"),
            (r#"x509Certificates.value lt "x""#, "is binary: 'lt' does not apply"),
            (r#"meta.created co "2011""#, "'meta.created' is a dateTime: 'co' does not apply"),
            (r#"meta.lastModified sw "2011""#, "'meta.lastModified' is a dateTime: 'sw' does not apply"),
            (r#"active eq "yes""#, "'active' is a boolean; compare it with true or false, not \"yes\""),
            ("userName eq true", "'userName' is a string; compare it with a quoted string, not true"),
            ("userName eq 42", "'userName' is a string"),
            (
                r#"meta.lastModified gt "yesterday""#,
                "'meta.lastModified' is a dateTime, and \"yesterday\" is not one",
            ),
            ("meta.lastModified gt 5", "'meta.lastModified' is a dateTime"),
            (r#"name eq "x""#, "'name' is a complex attribute without a value sub-attribute"),
            (r#"addresses eq "x""#, "'addresses' is a complex attribute without a value sub-attribute"),
            (r#"title[value eq "x"]"#, "'title' is not a complex attribute"),
            (r#"emails.value[value eq "x"]"#, "'emails.value' is not a complex attribute"),
            (r#"password eq "x""#, "'password' is never returned"),
            ("password pr", "'password' is never returned"),
            (r#"meta.location eq "x""#, "'meta.location' cannot be used in a filter"),
            (r#"meta.version eq "x""#, "'meta.version' cannot be used in a filter"),
            (r#"meta[created pr]"#, "'meta[...]' is not supported"),
            (r#"groups.value eq "x""#, "filter /Groups"),
            (r#"schemas eq "urn:example:nope""#, "unknown schema 'urn:example:nope'"),
            ("schemas pr", "only 'schemas eq"),
            (r#"schemas co "enterprise""#, "'schemas co' is not supported"),
            (r#"urn:example:Thing:title pr"#, "unknown schema 'urn:example:Thing'"),
            (r#"title eq "a\u0000b""#, "NUL character"),
        ];
        for (text, expected) in cases {
            let detail = detail(text);
            assert!(detail.starts_with("filter: "), "{text}: {detail}");
            assert!(detail.contains(expected), "{text}: {detail}");
        }
    }

    #[test]
    fn syntax_errors_say_where_and_what_was_expected() {
        let cases = [
            ("title", "filter: expected an operator after 'title' at position 6"),
            ("title eq", "filter: expected a value after 'eq' at position 9"),
            (r#"title eq"x""#, "filter: 'eq' at position 7 needs a space on each side"),
            ("title pr and", "filter: expected a filter after 'and' at position 13"),
            ("(title pr)and(userType pr)", "'and' at position 11 needs a space on each side"),
            ("title foo", "filter: expected an operator after 'title' at position 7, found 'foo'"),
            (r#"title eq "x" foo"#, "expected 'and' or 'or' after '\"x\"' at position 14, found 'foo'"),
            (r#"title eq "x"#, "filter: unterminated string starting at position 10"),
            ("title eq 'x'", "filter: strings must be in double quotes (position 10)"),
            ("title eq True", "expected a value (a \"string\", a number, true, false or null) after 'eq'"),
            ("title # x", "filter: unexpected character '#' at position 7"),
            ("", "filter: empty; write an expression such as"),
            ("   ", "filter: empty"),
            ("(title pr", "expected 'or' or ')' after 'pr' at position 10"),
            (r#"emails[type eq "work""#, "expected 'and', 'or' or ']' after '\"work\"' at position 22"),
            ("title pr)", "at position 9, found ')'"),
            ("a.b.c pr", "'a.b.c' has more than one sub-attribute"),
            ("a. pr", "'a.' is not a valid attribute path"),
            (r#"title eq "\q""#, "invalid string or number value"),
            ("  title  foo", "at position 10, found 'foo'"),
            ("not(title eq)", "position"),
        ];
        for (text, expected) in cases {
            let detail = detail(text);
            assert!(detail.contains(expected), "{text:?}: {detail}");
        }
    }

    #[test]
    fn entra_bare_values_and_sub_attribute_comparisons_are_understood() {
        let id = "2819c223-7f76-453a-919d-413861904646";
        assert_eq!(ok(&format!("externalId eq {id}")), ok(&format!("externalId eq \"{id}\"")));
        assert_eq!(ok("externalId eq jyoung"), ok(r#"externalId eq "jyoung""#));
        assert_eq!(
            ok(&format!("id eq 54D382A4 and manager eq {id}")),
            ok(&format!(r#"id eq "54D382A4" and manager eq "{id}""#))
        );
        // Literals stay literals.
        assert!(matches!(ok("active eq true"), Filter::Compare { value: Operand::Bool(true), .. }));
        assert!(detail("title eq 42").contains("not 42"), "a number stays a number");
        assert_eq!(
            ok(r#"emails[type eq "work"].value eq "a@x.example""#),
            ok(r#"emails[(type eq "work") and value eq "a@x.example"]"#)
        );
        assert_eq!(
            ok(r#"emails[type eq "work" or type eq "home"].value sw "a" and title pr"#),
            ok(r#"emails[(type eq "work" or type eq "home") and value sw "a"] and title pr"#)
        );
        assert_eq!(ok(r#"emails[type eq "work"].value pr"#), ok(r#"emails[(type eq "work") and value pr]"#));
        let bjensen = bjensen();
        assert!(matches(&ok(r#"emails[type eq "work"].value eq "bjensen@example.com""#), &bjensen));
        assert!(!matches(&ok(r#"emails[type eq "home"].value eq "bjensen@example.com""#), &bjensen));
        // Errors still point into the text as sent.
        let detail = detail(r#"emails[type eq "work"].value eq"#);
        assert!(detail.contains("position"), "{detail}");
    }

    #[test]
    fn depth_and_term_limits_are_reported_distinctly() {
        let deep = format!("{}title pr{}", "(".repeat(100), ")".repeat(100));
        assert!(detail(&deep).contains("nested more than 64 levels deep"), "{}", detail(&deep));
        let deep_not = format!("{}title pr{}", "not (".repeat(100), ")".repeat(100));
        assert!(detail(&deep_not).contains("nested more than 64 levels deep"));
        let wide = vec!["title pr"; 1100].join(" or ");
        assert!(detail(&wide).contains("more than 1024 comparisons"), "{}", detail(&wide));
        let fine = vec![r#"userName eq "x""#; 200].join(" or ");
        assert!(parse(&fine, &user()).is_ok());
    }

    #[test]
    fn malformed_filters_are_invalid_filter_errors_never_panics() {
        let corpus = [
            "(",
            ")",
            "[",
            "]",
            "()",
            "[]",
            "\"",
            "\"\"",
            "\\",
            "pr",
            "eq",
            "and",
            "or",
            "not",
            "not ",
            "not(",
            "not ()",
            "title pr pr",
            "title eq eq \"x\"",
            "title eq \"x\" and",
            "and title pr",
            "title pr or or x pr",
            "emails[",
            "emails[]",
            "emails[type eq \"work\"",
            "emails[type eq \"work\"]]",
            "emails[[type pr]]",
            "emails[type eq \"work\"].value eq \"x\"",
            "emails[emails[type pr]]",
            "title eq 1e999",
            "title eq -",
            "title eq .5",
            "title eq 01",
            "title eq tru",
            "title eq \"\\u12\"",
            "title eq \"\\ud800\"",
            "$ref eq \"x\"",
            "$",
            "$$ref",
            "title eq \"x\" ) (",
            "title\u{0}pr",
            "ti tle pr",
            "title  eq",
            "title\teq\t\"x\"",
            "urn:",
            "urn:x",
            "urn:x:",
            ":title pr",
            "title: pr",
            "title. pr",
            ".title pr",
            "1title pr",
            "-title pr",
            "title-x pr",
            "title_x pr",
            "name.givenName.x pr",
            "urn:ietf:params:scim:schemas:core:2.0:User pr",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User pr",
            "É pr",
            "title eq \"É\" and É pr",
            "title eq «x»",
            "title eq \"x\"\"y\"",
            "not not (title pr)",
            "(((((title pr",
            "title pr))))))",
            "emails[type eq \"work\"] eq \"x\"",
            "title pr and (",
            "title eq null null",
            "schemas",
            "schemas eq",
            "schemas eq true",
            "meta pr and",
            "id gt",
            "externalId sw 5",
            "userName eq [\"x\"]",
            "userName eq {}",
        ];
        let schema = user();
        for text in corpus {
            match parse(text, &schema) {
                Err(Error::InvalidFilter(detail)) => {
                    assert!(detail.starts_with("filter: ") && detail.len() > 12, "{text:?}: {detail}")
                }
                // A few of these are valid, which is fine: the point is no panic.
                Ok(_) => {}
                Err(other) => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn matching_follows_the_documented_semantics() {
        let resource = bjensen();
        let cases = [
            // Case-insensitive attributes fold; caseExact ones do not.
            (r#"userName eq "BJENSEN""#, true),
            (r#"externalId eq "BJENSEN""#, false),
            (r#"id sw "2819C""#, false),
            (r#"id sw "2819c""#, true),
            // ne matches unassigned attributes; for multi-valued it means no value is equal.
            (r#"nickName ne "x""#, true),
            (r#"emails.type ne "home""#, false),
            (r#"emails.type ne "other""#, true),
            // pr: empty arrays are absent; a complex value is present if a sub-attribute is.
            ("phoneNumbers pr", false),
            ("emails pr", true),
            ("name pr", true),
            ("addresses pr", false),
            ("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager pr", true),
            // Value paths need one element to satisfy the whole bracket.
            (r#"emails[type eq "home" and value co "example.com"]"#, false),
            (r#"emails.type eq "home" and emails.value co "example.com""#, true),
            (r#"emails[not (primary eq true)]"#, true),
            (r#"name[givenName eq "barbara" and familyName sw "o'"]"#, true),
            (r#"name[givenName eq "barbara" and familyName sw "x"]"#, false),
            (r#"addresses[not (type pr)]"#, false),
            // Ordering: strings by their (folded) bytes; dateTimes by time.
            (r#"title gt "tour""#, true),
            (r#"title lt "TOUR GUIDE""#, false),
            (r#"title le "TOUR GUIDE""#, true),
            (r#"meta.created eq "2011-08-01T20:29:49.793+02:00""#, true),
            (r#"meta.created gt "2011-08-01T18:29:49.792Z""#, true),
            ("active eq true", true),
            ("active ne true", false),
            (r#"meta.resourceType eq "user""#, true),
            (r#"schemas eq "urn:ietf:params:scim:schemas:core:2.0:User""#, true),
            ("department sw \"tour\"", true),
            ("manager eq \"26118915-6090\"", true),
            (r#"manager[value eq "26118915-6090"]"#, true),
        ];
        let schema = user();
        for (text, expected) in cases {
            let filter = parse(text, &schema).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(matches(&filter, &resource), expected, "{text}");
        }
        let mut without_extension = resource.clone();
        without_extension.insert(ENTERPRISE_USER_SCHEMA.into(), json!({"department": ""}));
        assert!(!matches(
            &ok(r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#),
            &without_extension
        ));
    }

    #[test]
    fn value_matches_tests_one_element() {
        let schema = user();
        let crate::scim::path::PatchTarget::Values { filter, .. } = crate::scim::path::parse_patch_path(
            r#"emails[type eq "WORK" and not (primary eq false)]"#,
            &schema,
        )
        .unwrap() else {
            panic!()
        };
        assert!(value_matches(&filter, &json!({"type": "Work", "primary": true})));
        assert!(value_matches(&filter, &json!({"type": "work"})));
        assert!(!value_matches(&filter, &json!({"type": "work", "primary": false})));
        assert!(!value_matches(&filter, &json!({"type": "home"})));
        assert!(!value_matches(&filter, &json!("work")));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn printed_filters_parse_back_to_the_same_filter(filter in strategies::filter(&user())) {
            let text = filter.to_string();
            let parsed = parse(&text, &user());
            prop_assert_eq!(parsed.as_ref().ok(), Some(&filter), "{} => {:?}", text, parsed);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "[a-zA-Z$\\[\\]() \"\\\\.:_é0-9-]{0,40}") {
            let _ = parse(&text, &user());
        }
    }
}

/// Generators for typed filters and users, shared with `store::filter_sql`'s agreement test.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
pub mod strategies {
    use super::*;
    use crate::scim::schema::ENTERPRISE_USER_SCHEMA;
    use proptest::prelude::*;
    use proptest::sample::select;
    use serde_json::json;

    /// Short strings over an alphabet that collides often and exercises case folding, non-ASCII
    /// ordering and the text rewriting of the parser wrapper.
    pub fn text() -> impl Strategy<Value = String> {
        const PIECES: &[&str] = &[
            "a", "A", "b", "é", "É", "ß", "Σ", "σ", "ς", "x", "@", ".", " ", "\"", "\\", "$ref", "not(", "z",
        ];
        prop::collection::vec(select(PIECES), 0..4).prop_map(|pieces| pieces.concat())
    }

    /// Milliseconds in a narrow window, so comparisons hit both sides.
    pub fn millis() -> impl Strategy<Value = i64> {
        (0i64..6).prop_map(|i| 1_700_000_000_000 + i * 1_000)
    }

    /// Paths filters are generated over (as written in a filter).
    const PATHS: &[&str] = &[
        "id",
        "externalId",
        "userName",
        "displayName",
        "active",
        "title",
        "nickName",
        "name.givenName",
        "emails",
        "emails.value",
        "emails.type",
        "emails.primary",
        "phoneNumbers.value",
        "phoneNumbers.type",
        "meta.created",
        "meta.lastModified",
        "meta.resourceType",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
    ];
    const PRESENT_PATHS: &[&str] = &[
        "title",
        "emails",
        "name",
        "phoneNumbers.type",
        "displayName",
        "externalId",
        "manager",
        "meta",
        "id",
    ];
    const VALUE_PATHS: &[&str] = &["emails", "phoneNumbers", "name", "manager"];

    fn resolved(schema: &ResourceSchema, text: &str) -> ResolvedAttr {
        let ast::Filter::Attr(ast::AttrExp::Present(path)) =
            ast::Filter::from_str(&format!("{text} pr")).unwrap()
        else {
            panic!("{text}")
        };
        path::resolve(schema, &path).unwrap()
    }

    fn operand(attr: &ResolvedAttr) -> BoxedStrategy<Operand> {
        match attr.kind() {
            AttrType::Boolean => any::<bool>().prop_map(Operand::Bool).boxed(),
            AttrType::DateTime => millis().prop_map(Operand::DateTime).boxed(),
            _ => {
                let def = attr.def().clone();
                let id_like =
                    prop_oneof![text(), select(&["u1", "U1", "u", "u2"][..]).prop_map(String::from)];
                id_like
                    .prop_map(move |s| Operand::Text(index::encode(&def, &Value::String(s)).unwrap()))
                    .boxed()
            }
        }
    }

    fn operators(kind: AttrType) -> Vec<CompareOp> {
        CompareOp::ALL
            .into_iter()
            .filter(|op| match kind {
                AttrType::Boolean => matches!(op, CompareOp::Eq | CompareOp::Ne),
                AttrType::DateTime => !op.is_substring(),
                _ => true,
            })
            .collect()
    }

    fn comparison(attrs: Vec<ResolvedAttr>) -> impl Strategy<Value = (ResolvedAttr, CompareOp, Operand)> {
        select(attrs).prop_flat_map(|attr| {
            let ops = operators(attr.kind());
            (Just(attr.clone()), select(ops), operand(&attr))
        })
    }

    fn value_filter(parent: &ResolvedAttr) -> BoxedStrategy<ValueFilter> {
        let subs: Vec<ResolvedAttr> = parent
            .def()
            .sub_attributes
            .iter()
            .map(|s| parent.sub_attribute(&s.name).unwrap())
            .filter(|s| s.def().returned != crate::scim::schema::Returned::Never)
            .collect();
        let leaf = prop_oneof![
            3 => comparison(subs.clone()).prop_map(|(attr, op, value)| ValueFilter::Compare { attr, op, value }),
            1 => select(subs).prop_map(ValueFilter::Present),
        ];
        leaf.prop_recursive(2, 6, 3, |inner| {
            prop_oneof![
                inner.clone().prop_map(|f| ValueFilter::Not(Box::new(f))),
                prop::collection::vec(inner.clone(), 2..4).prop_map(|items| flatten_value(items, true)),
                prop::collection::vec(inner, 2..4).prop_map(|items| flatten_value(items, false)),
            ]
        })
        .boxed()
    }

    /// `And`/`Or` as the parser builds them: nested same-operator nodes flattened.
    fn flatten(items: Vec<Filter>, and: bool) -> Filter {
        let mut flat = Vec::new();
        for item in items {
            match item {
                Filter::And(inner) if and => flat.extend(inner),
                Filter::Or(inner) if !and => flat.extend(inner),
                other => flat.push(other),
            }
        }
        if and {
            Filter::And(flat)
        } else {
            Filter::Or(flat)
        }
    }

    fn flatten_value(items: Vec<ValueFilter>, and: bool) -> ValueFilter {
        let mut flat = Vec::new();
        for item in items {
            match item {
                ValueFilter::And(inner) if and => flat.extend(inner),
                ValueFilter::Or(inner) if !and => flat.extend(inner),
                other => flat.push(other),
            }
        }
        if and {
            ValueFilter::And(flat)
        } else {
            ValueFilter::Or(flat)
        }
    }

    /// Type-correct filters over the User schema, in the shape the parser produces.
    pub fn filter(schema: &ResourceSchema) -> BoxedStrategy<Filter> {
        let compared: Vec<ResolvedAttr> =
            PATHS.iter().map(|p| resolved(schema, p)).map(|a| a.compared().unwrap()).collect();
        let present: Vec<ResolvedAttr> = PRESENT_PATHS.iter().map(|p| resolved(schema, p)).collect();
        let value_paths: Vec<BoxedStrategy<Filter>> = VALUE_PATHS
            .iter()
            .map(|p| {
                let attr = resolved(schema, p);
                value_filter(&attr)
                    .prop_map(move |filter| Filter::ValuePath { attr: attr.clone(), filter })
                    .boxed()
            })
            .collect();
        let extension = match check_schemas(
            &ast::AttrExp::Comparison(
                ast::AttrPath::with_name("schemas"),
                ast::CompareOp::Eq,
                ENTERPRISE_USER_SCHEMA.into(),
            ),
            schema,
        ) {
            Ok(filter) => filter,
            Err(e) => panic!("{e}"),
        };
        let leaf = prop_oneof![
            6 => comparison(compared).prop_map(|(attr, op, value)| Filter::Compare { attr, op, value }),
            2 => select(present).prop_map(Filter::Present),
            2 => proptest::strategy::Union::new(value_paths),
            1 => Just(extension),
        ];
        leaf.prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                inner.clone().prop_map(|f| Filter::Not(Box::new(f))),
                prop::collection::vec(inner.clone(), 2..4).prop_map(|items| flatten(items, true)),
                prop::collection::vec(inner, 2..4).prop_map(|items| flatten(items, false)),
            ]
        })
        .boxed()
    }

    /// A stored user as the store holds it (without `id` and `meta`): mixed case, unicode,
    /// 0–3 emails, phone numbers, the enterprise extension.
    pub fn user() -> impl Strategy<Value = Map<String, Value>> {
        let email = (
            text(),
            prop::option::of(select(&["work", "home", "Work"][..])),
            prop::option::of(any::<bool>()),
        )
            .prop_map(|(value, kind, primary)| {
                Value::Object(object([
                    ("value", Some(format!("{value}@x.É").into())),
                    ("type", kind.map(Value::from)),
                    ("primary", primary.map(Value::from)),
                ]))
            });
        let phone = (text(), prop::option::of(select(&["mobile", "work"][..]))).prop_map(|(value, kind)| {
            Value::Object(object([("value", Some(value.into())), ("type", kind.map(Value::from))]))
        });
        let names = (text(), prop::option::of(text()), prop::option::of(text()), any::<bool>());
        let more = (prop::option::of(text()), prop::option::of(text()));
        let extension = (prop::option::of(text()), prop::option::of(text()));
        let emails = prop::collection::vec(email, 0..4);
        let phones = prop::collection::vec(phone, 0..3);
        (names, more, emails, phones, extension).prop_map(
            |(
                (user_name, display_name, external_id, active),
                (title, given),
                emails,
                phones,
                (dept, manager),
            )| {
                let enterprise = object([
                    ("department", dept.map(Value::from)),
                    ("manager", manager.map(|m| json!({"value": m}))),
                ]);
                object([
                    ("userName", Some(user_name.into())),
                    ("displayName", display_name.map(Value::from)),
                    ("externalId", external_id.map(Value::from)),
                    ("active", Some(active.into())),
                    ("title", title.map(Value::from)),
                    ("name", given.map(|g| json!({"givenName": g}))),
                    ("emails", (!emails.is_empty()).then(|| emails.into())),
                    // Always present, sometimes empty: `[]` is unassigned.
                    ("phoneNumbers", Some(phones.into())),
                    (ENTERPRISE_USER_SCHEMA, (!enterprise.is_empty()).then(|| enterprise.into())),
                ])
            },
        )
    }

    /// An object of the fields that are `Some`.
    fn object<const N: usize>(fields: [(&str, Option<Value>); N]) -> Map<String, Value> {
        fields.into_iter().filter_map(|(name, value)| Some((name.to_string(), value?))).collect()
    }
}
