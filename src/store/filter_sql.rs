//! Typed filters ([`crate::scim::filter::Filter`]) compiled to SQL that runs on indexes.
//!
//! The result is a boolean SQL expression over `users` (the `WHERE` clause after
//! `users.directory_id = <dir>`), as SQL text and binds in order ([`SqlFragment`]). Attributes
//! with a column compare on it (`users.user_name_folded = ?`); every other attribute is an
//! `IN` subquery on `user_values (attr_id, value)` (the attribute numbered per directory, see
//! [`attr_number`]), so both SQLite and PostgreSQL drive from that index; value paths quantify
//! over an element's marker row and find its sub-attributes through the primary key
//! `user_values (user_id, attr_id, pos, value)`. Every piece is two-valued (nullable
//! columns are guarded), so `NOT` is exact; the semantics are those of
//! [`crate::scim::filter::matches`], which a property test holds equal.
//!
//! Text compares bytewise on both backends (SQLite's default, PostgreSQL `COLLATE "C"`).
//! `LIKE` is never used: SQLite's is ASCII-case-insensitive, which would break `caseExact`.

use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Bool, Integer, Text, Untyped};
use diesel::{QueryResult, RunQueryDsl};
use serde_json::{Map, Value};

use super::conn::{Backend, DbConn};
use crate::scim::filter::{self, CompareOp, Filter, Operand, SchemaRef, ValueFilter};
use crate::scim::index::Column;
use crate::scim::path::{self, ResolvedAttr};
use crate::scim::schema::ResourceKind;

/// The diesel backend of [`DbConn`].
pub type Db = <DbConn as diesel::Connection>::Backend;

/// A piece of SQL: text, or a bind parameter. Text never contains placeholders; [`apply`] writes
/// one per bind, in the backend's syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlPart {
    Sql(String),
    Text(String),
    Int(i32),
    BigInt(i64),
    Bool(bool),
}

/// SQL text with its binds, in order, for one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlFragment {
    pub backend: Backend,
    pub parts: Vec<SqlPart>,
}

impl SqlFragment {
    pub fn new(backend: Backend) -> Self {
        SqlFragment { backend, parts: Vec::new() }
    }

    /// Appends SQL text (without placeholders).
    pub fn push_sql(&mut self, sql: &str) {
        match self.parts.last_mut() {
            Some(SqlPart::Sql(last)) => last.push_str(sql),
            _ => self.parts.push(SqlPart::Sql(sql.to_string())),
        }
    }

    /// Appends a bind parameter (any part but [`SqlPart::Sql`]) or text.
    pub fn push(&mut self, part: SqlPart) {
        match part {
            SqlPart::Sql(sql) => self.push_sql(&sql),
            bind => self.parts.push(bind),
        }
    }

    /// Appends another fragment.
    pub fn append(&mut self, other: SqlFragment) {
        other.parts.into_iter().for_each(|part| self.push(part));
    }

    /// The SQL with `?` for every bind, for tests and logs.
    pub fn to_debug_string(&self) -> String {
        self.parts
            .iter()
            .map(|part| match part {
                SqlPart::Sql(sql) => sql.as_str(),
                SqlPart::Text(_) | SqlPart::Int(_) | SqlPart::BigInt(_) | SqlPart::Bool(_) => "?",
            })
            .collect()
    }

    /// The bind values, for tests and logs.
    pub fn binds(&self) -> impl Iterator<Item = &SqlPart> {
        self.parts.iter().filter(|part| !matches!(part, SqlPart::Sql(_)))
    }
}

/// A whole statement built as a [`SqlFragment`], ready to run with diesel's `RunQueryDsl`
/// (`load`, `get_result`, `execute`). Binds are written in the backend's placeholder syntax.
///
/// A statement marked [`Statement::cached`] keeps its prepared form on each connection
/// (diesel's statement cache, keyed by the SQL text), which spares SQLite re-parsing it on
/// every request. That cache is unbounded, so only statements whose shapes come from a small
/// fixed set may be cached (see [`is_bounded_shape`]); any other one is prepared afresh.
#[derive(Debug, Clone)]
pub struct Statement {
    fragment: SqlFragment,
    cached: bool,
}

impl Statement {
    pub fn once(fragment: SqlFragment) -> Statement {
        Statement { fragment, cached: false }
    }

    pub fn cached(fragment: SqlFragment) -> Statement {
        Statement { fragment, cached: true }
    }
}

impl QueryFragment<Db> for Statement {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Db>) -> QueryResult<()> {
        if !self.cached {
            out.unsafe_to_cache_prepared();
        }
        for part in &self.fragment.parts {
            match part {
                SqlPart::Sql(sql) => out.push_sql(sql),
                SqlPart::Text(value) => out.push_bind_param::<Text, _>(value)?,
                SqlPart::Int(value) => out.push_bind_param::<Integer, _>(value)?,
                SqlPart::BigInt(value) => out.push_bind_param::<BigInt, _>(value)?,
                SqlPart::Bool(value) => out.push_bind_param::<Bool, _>(value)?,
            }
        }
        Ok(())
    }
}

impl QueryId for Statement {
    type QueryId = ();
    // No static id: the cache keys such statements by their SQL text.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Statement {
    type SqlType = Untyped;
}

impl<Conn> RunQueryDsl<Conn> for Statement {}

/// Whether a filter's compiled SQL comes from a bounded set of shapes (one per attribute and
/// operator), so statements around it may be cached: a single comparison or presence test,
/// which is what IdPs send (`userName eq`, `externalId eq`).
pub fn is_bounded_shape(filter: &Filter) -> bool {
    matches!(filter, Filter::Compare { .. } | Filter::Present(_))
}

/// Whether a filter is an equality on a column with its own index (`userName eq`, `externalId
/// eq`, `displayName eq`, `id eq`): the few rows it selects are best found by that index and
/// sorted, whatever index could return the directory in order (see `users::load_page`).
pub fn is_column_equality(filter: &Filter) -> bool {
    match filter {
        Filter::Compare { attr, op: CompareOp::Eq, .. } => matches!(
            attr.column(),
            Some(Column::UserName | Column::ExternalId | Column::DisplayName | Column::Id)
        ),
        _ => false,
    }
}

/// The index key of the enterprise `manager.value`, which also matches the resolved manager
/// link (`users.manager_id`, see `users::resolve_manager`).
const MANAGER_VALUE_KEY: &str = "enterprise:manager.value";

/// Compiles a User filter to a boolean SQL expression over `users`, for the directory
/// `directory_id` (bound in every attribute-number subquery, so the `user_values` index applies).
pub fn compile(filter: &Filter, directory_id: &str, backend: Backend) -> SqlFragment {
    let mut compiler = Compiler::new(ResourceKind::User, directory_id, backend);
    compiler.filter(filter);
    compiler.out
}

/// Compiles a Group filter to a boolean SQL expression over `groups`. Columns compare as for
/// users; `members` (and `members.value`, `members[value ...]`) query `group_members` through
/// its directory index. Filters on other member sub-attributes (`display`, `type`, `$ref`) are
/// refused: they are not stored, they are derived.
pub fn compile_group(filter: &Filter, directory_id: &str, backend: Backend) -> Result<SqlFragment, String> {
    let mut compiler = Compiler::new(ResourceKind::Group, directory_id, backend);
    compiler.filter(filter);
    match compiler.unsupported {
        Some(detail) => Err(detail),
        None => Ok(compiler.out),
    }
}

struct Compiler<'a> {
    out: SqlFragment,
    kind: ResourceKind,
    directory_id: &'a str,
    aliases: usize,
    /// Why the filter cannot be compiled for this resource type (Groups only).
    unsupported: Option<String>,
}

impl<'a> Compiler<'a> {
    fn new(kind: ResourceKind, directory_id: &'a str, backend: Backend) -> Self {
        Compiler { out: SqlFragment::new(backend), kind, directory_id, aliases: 0, unsupported: None }
    }

    /// `<table>.<column>`; None for a column the resource type does not have (the type check
    /// keeps those out of its filters).
    fn column_name(&self, column: Column) -> Option<&'static str> {
        Some(match (self.kind, column) {
            (ResourceKind::User, Column::Id) => "users.id",
            (ResourceKind::User, Column::ExternalId) => "users.external_id",
            (ResourceKind::User, Column::UserName) => "users.user_name_folded",
            (ResourceKind::User, Column::DisplayName) => "users.display_name_folded",
            (ResourceKind::User, Column::Active) => "users.active",
            (ResourceKind::User, Column::Created) => "users.created_at",
            (ResourceKind::User, Column::LastModified) => "users.modified_at",
            (ResourceKind::Group, Column::Id) => "groups.id",
            (ResourceKind::Group, Column::ExternalId) => "groups.external_id",
            (ResourceKind::Group, Column::DisplayName) => "groups.display_name_folded",
            (ResourceKind::Group, Column::Created) => "groups.created_at",
            (ResourceKind::Group, Column::LastModified) => "groups.modified_at",
            (ResourceKind::Group, Column::UserName | Column::Active) => return None,
        })
    }

    fn refuse(&mut self, detail: String) {
        self.unsupported.get_or_insert(detail);
        self.constant(false);
    }

    /// Whether `attr` is a Group's member id: `members.value` (`members eq` compares it too).
    fn is_member_value(&self, attr: &ResolvedAttr) -> bool {
        self.kind == ResourceKind::Group
            && attr.name() == "members"
            && attr.sub_name().is_none_or(|sub| sub == "value")
    }

    /// `groups.id [NOT] IN (SELECT gm.group_id FROM group_members gm WHERE gm.directory_id = ?
    /// AND ` — the caller writes the condition on `gm.user_id` and the closing parenthesis.
    fn open_membership(&mut self, negated: bool) -> String {
        let m = self.alias("gm");
        self.sql(if negated { "groups.id NOT IN (" } else { "groups.id IN (" });
        self.sql(&format!("SELECT {m}.group_id FROM group_members {m} WHERE {m}.directory_id = "));
        self.text(self.directory_id);
        self.sql(" AND ");
        m
    }

    fn sql(&mut self, sql: &str) {
        self.out.push_sql(sql);
    }

    fn text(&mut self, value: impl Into<String>) {
        self.out.push(SqlPart::Text(value.into()));
    }

    fn int(&mut self, value: usize) {
        self.out.push(SqlPart::Int(i32::try_from(value).unwrap_or(i32::MAX)));
    }

    /// A fresh table alias: `v1`, `m2`, `s3`, ...
    fn alias(&mut self, prefix: &str) -> String {
        self.aliases += 1;
        format!("{prefix}{}", self.aliases)
    }

    fn constant(&mut self, value: bool) {
        self.sql(if value { "TRUE" } else { "FALSE" });
    }

    fn filter(&mut self, filter: &Filter) {
        match filter {
            Filter::Compare { attr, op, value } => self.compare(attr, *op, value),
            Filter::Present(attr) => self.present(attr),
            Filter::ValuePath { attr, filter } => self.value_path(attr, filter),
            Filter::HasSchema(SchemaRef::Core(_)) => self.constant(true),
            Filter::HasSchema(SchemaRef::Extension { .. }) if self.kind == ResourceKind::Group => {
                self.constant(false)
            }
            Filter::HasSchema(SchemaRef::Extension { urn, .. }) => {
                let prefix = path::extension_prefix(urn);
                self.any_value_in_range(&prefix);
            }
            Filter::Not(inner) => {
                self.sql("NOT (");
                self.filter(inner);
                self.sql(")");
            }
            Filter::And(items) => self.join(items, " AND ", true, Self::filter),
            Filter::Or(items) => self.join(items, " OR ", false, Self::filter),
        }
    }

    fn join<T>(&mut self, items: &[T], separator: &str, empty: bool, mut each: impl FnMut(&mut Self, &T)) {
        if items.is_empty() {
            return self.constant(empty);
        }
        self.sql("(");
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.sql(separator);
            }
            each(self, item);
        }
        self.sql(")");
    }

    fn compare(&mut self, attr: &ResolvedAttr, op: CompareOp, value: &Operand) {
        if attr.is_common() && attr.column().is_none() {
            // meta.resourceType: the same for every row of the table, so decide it here, with
            // the in-memory semantics.
            return self.constant(common_constant(self.kind, attr, op, value));
        }
        if let Some(column) = attr.column() {
            return self.column_compare(column, op, value);
        }
        if self.is_member_value(attr) {
            let (negated, op) = positive(op);
            let m = self.open_membership(negated);
            self.text_condition(&format!("{m}.user_id"), op, &value.key());
            return self.sql(")");
        }
        if self.kind == ResourceKind::Group {
            return self.refuse(format!("Groups cannot be filtered on '{attr}'; filter on members.value"));
        }
        let (negated, op) = positive(op);
        let linked_manager = attr.key() == MANAGER_VALUE_KEY;
        if linked_manager {
            // The value as sent, or the user the manager resolved to (users.manager_id).
            self.sql(if negated {
                "NOT ((users.manager_id IS NOT NULL AND "
            } else {
                "((users.manager_id IS NOT NULL AND "
            });
            self.text_condition("users.manager_id", op, &value.key());
            self.sql(") OR ");
        }
        let v = self.alias("v");
        let negated_subquery = negated && !linked_manager;
        self.sql(if negated_subquery { "users.id NOT IN (" } else { "users.id IN (" });
        self.sql(&format!("SELECT {v}.user_id FROM user_values {v} WHERE "));
        self.attr_is(&v, attr.key());
        self.sql(" AND ");
        self.text_condition(&format!("{v}.value"), op, &value.key());
        self.sql(")");
        if linked_manager {
            self.sql(")");
        }
    }

    fn column_compare(&mut self, column: Column, op: CompareOp, value: &Operand) {
        let Some(name) = self.column_name(column) else {
            // The type check keeps other resource types' attributes out of a filter.
            return self.constant(op == CompareOp::Ne);
        };
        match (column, value) {
            (Column::Active, Operand::Bool(b)) => {
                self.sql(&format!("{name} {} ", if op == CompareOp::Ne { "<>" } else { "=" }));
                self.out.push(SqlPart::Bool(*b));
            }
            (Column::Created | Column::LastModified, Operand::DateTime(millis)) => {
                self.time_compare(name, op, *millis)
            }
            (Column::Id, Operand::Text(key)) => {
                // Ordering and prefix ranges on ids must be bytewise on PostgreSQL too.
                let bytewise =
                    self.out.backend == Backend::Postgres && (op.is_ordering() || op == CompareOp::Sw);
                let column = if bytewise { format!("{name} COLLATE \"C\"") } else { name.to_string() };
                self.text_column_compare(&column, false, op, key)
            }
            (Column::ExternalId, Operand::Text(key)) => self.text_column_compare(name, true, op, key),
            (Column::UserName, Operand::Text(key)) => self.text_column_compare(name, false, op, key),
            // Users may lack a displayName; a Group always has one.
            (Column::DisplayName, Operand::Text(key)) => {
                self.text_column_compare(name, self.kind == ResourceKind::User, op, key)
            }
            // The type check rules out any other operand for these columns.
            _ => self.constant(op == CompareOp::Ne),
        }
    }

    fn time_compare(&mut self, column: &str, op: CompareOp, millis: i64) {
        self.sql(&format!("{column} {} ", sql_operator(op)));
        self.out.push(SqlPart::BigInt(millis));
    }

    /// A text column; a nullable one is guarded so the result is never NULL (`NOT` stays exact).
    fn text_column_compare(&mut self, column: &str, nullable: bool, op: CompareOp, key: &str) {
        match (positive(op), nullable) {
            ((true, _), true) => {
                self.sql(&format!("({column} IS NULL OR {column} <> "));
                self.text(key);
                self.sql(")");
            }
            ((true, _), false) => {
                self.sql(&format!("{column} <> "));
                self.text(key);
            }
            ((false, op), true) => {
                self.sql(&format!("({column} IS NOT NULL AND "));
                self.text_condition(column, op, key);
                self.sql(")");
            }
            ((false, op), false) => self.text_condition(column, op, key),
        }
    }

    /// `expr <op> key` for text, `op` not `ne`. `sw` is an index range plus an exact prefix
    /// check; `ew` and `co` count characters, which `length`/`substr` do on both backends.
    fn text_condition(&mut self, expr: &str, op: CompareOp, key: &str) {
        let chars = key.chars().count();
        match op {
            CompareOp::Sw => {
                self.sql(&format!("({expr} >= "));
                self.text(key);
                if let Some(upper) = prefix_upper_bound(key) {
                    self.sql(&format!(" AND {expr} < "));
                    self.text(upper);
                }
                self.sql(&format!(" AND substr({expr}, 1, "));
                self.int(chars);
                self.sql(") = ");
                self.text(key);
                self.sql(")");
            }
            CompareOp::Ew => {
                self.sql(&format!("(length({expr}) >= "));
                self.int(chars);
                self.sql(&format!(" AND substr({expr}, length({expr}) - "));
                self.int(chars);
                self.sql(" + 1) = ");
                self.text(key);
                self.sql(")");
            }
            CompareOp::Co => {
                let function = match self.out.backend {
                    Backend::Sqlite => "instr",
                    Backend::Postgres => "strpos",
                };
                self.sql(&format!("{function}({expr}, "));
                self.text(key);
                self.sql(") > 0");
            }
            CompareOp::Eq | CompareOp::Ne | CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le => {
                self.sql(&format!("{expr} {} ", sql_operator(op)));
                self.text(key);
            }
        }
    }

    fn present(&mut self, attr: &ResolvedAttr) {
        if let Some(column) = attr.column() {
            let Some(name) = self.column_name(column) else { return self.constant(false) };
            return match column {
                Column::ExternalId | Column::DisplayName => {
                    self.sql(&format!("({name} IS NOT NULL AND {name} <> '')"))
                }
                Column::UserName | Column::Id => self.sql(&format!("{name} <> ''")),
                Column::Active | Column::Created | Column::LastModified => self.constant(true),
            };
        }
        if self.is_member_value(attr) {
            let m = self.open_membership(false);
            return self.sql(&format!("{m}.user_id <> '')"));
        }
        if attr.is_common() {
            // `meta` and `meta.resourceType` are always present.
            return self.constant(true);
        }
        if self.kind == ResourceKind::Group {
            // Member `display`, `type` and `$ref` are derived for every member.
            return match attr.name() {
                "members" => {
                    let m = self.open_membership(false);
                    self.sql(&format!("{m}.user_id <> '')"))
                }
                _ => self.constant(false),
            };
        }
        if attr.is_complex() {
            return self.any_value_in_range(&format!("{}.", attr.key()));
        }
        let linked_manager = attr.key() == MANAGER_VALUE_KEY;
        if linked_manager {
            self.sql("(users.manager_id IS NOT NULL OR ");
        }
        let v = self.alias("v");
        self.sql(&format!("users.id IN (SELECT {v}.user_id FROM user_values {v} WHERE "));
        self.attr_is(&v, attr.key());
        self.sql(&format!(" AND {v}.value <> '')"));
        if linked_manager {
            self.sql(")");
        }
    }

    /// A non-empty value under any key starting with `prefix`: every sub-attribute of a complex
    /// attribute (`emails.`), or every attribute of an extension (`enterprise:`).
    fn any_value_in_range(&mut self, prefix: &str) {
        let v = self.alias("v");
        self.sql(&format!("users.id IN (SELECT {v}.user_id FROM user_values {v} WHERE "));
        self.attr_in_range(&v, prefix);
        self.sql(&format!(" AND {v}.value <> '')"));
    }

    /// `<alias>.attr_id = <the number of key in this directory>`.
    fn attr_is(&mut self, alias: &str, key: &str) {
        self.sql(&format!("{alias}.attr_id = "));
        attr_number(&mut self.out, self.directory_id, key);
    }

    /// `<alias>.attr_id IN <the numbers of this directory's keys starting with prefix>`.
    fn attr_in_range(&mut self, alias: &str, prefix: &str) {
        self.sql(&format!("{alias}.attr_id IN (SELECT id FROM value_attrs WHERE directory_id = "));
        self.text(self.directory_id);
        self.sql(" AND attr >= ");
        self.text(prefix);
        if let Some(upper) = prefix_upper_bound(prefix) {
            self.sql(" AND attr < ");
            self.text(upper);
        }
        self.sql(")");
    }

    /// One element satisfies the inner filter. Elements of a multi-valued attribute are its
    /// marker rows; a single-valued complex attribute is one element at position 0, found
    /// through any of its sub-attribute rows.
    fn value_path(&mut self, attr: &ResolvedAttr, filter: &ValueFilter) {
        if self.kind == ResourceKind::Group {
            if attr.name() != "members" {
                return self.refuse(format!("Groups cannot be filtered on '{attr}'"));
            }
            let m = self.open_membership(false);
            self.member_filter(filter, &m);
            return self.sql(")");
        }
        let m = self.alias("m");
        self.sql(&format!("users.id IN (SELECT {m}.user_id FROM user_values {m} WHERE "));
        if attr.is_multi_valued() {
            self.attr_is(&m, attr.key());
        } else {
            self.attr_in_range(&m, &format!("{}.", attr.key()));
        }
        self.sql(" AND ");
        self.value_filter(filter, &m);
        self.sql(")");
    }

    fn value_filter(&mut self, filter: &ValueFilter, element: &str) {
        match filter {
            ValueFilter::Compare { attr, op, value } => {
                let (negated, op) = positive(*op);
                let s = self.sub_value(attr, element, negated);
                self.text_condition(&format!("{s}.value"), op, &value.key());
                self.sql(")");
            }
            ValueFilter::Present(attr) => {
                let s = self.sub_value(attr, element, false);
                self.sql(&format!("{s}.value <> '')"));
            }
            ValueFilter::Not(inner) => {
                self.sql("NOT (");
                self.value_filter(inner, element);
                self.sql(")");
            }
            ValueFilter::And(items) => self.join(items, " AND ", true, |c, f| c.value_filter(f, element)),
            ValueFilter::Or(items) => self.join(items, " OR ", false, |c, f| c.value_filter(f, element)),
        }
    }

    /// The filter inside `members[...]`, over one membership row `m`: only `value` (the member
    /// id) is stored.
    fn member_filter(&mut self, filter: &ValueFilter, m: &str) {
        match filter {
            ValueFilter::Compare { attr, op, value } if attr.sub_name() == Some("value") => {
                let (negated, op) = positive(*op);
                self.sql(if negated { "NOT (" } else { "(" });
                self.text_condition(&format!("{m}.user_id"), op, &value.key());
                self.sql(")");
            }
            ValueFilter::Present(attr) if attr.sub_name() == Some("value") => self.constant(true),
            ValueFilter::Compare { attr, .. } | ValueFilter::Present(attr) => self.refuse(format!(
                "members can be filtered on their value only, not on '{}'",
                attr.sub_name().unwrap_or_default()
            )),
            ValueFilter::Not(inner) => {
                self.sql("NOT (");
                self.member_filter(inner, m);
                self.sql(")");
            }
            ValueFilter::And(items) => self.join(items, " AND ", true, |c, f| c.member_filter(f, m)),
            ValueFilter::Or(items) => self.join(items, " OR ", false, |c, f| c.member_filter(f, m)),
        }
    }

    /// Opens `[NOT] EXISTS (... s.value` for a sub-attribute of the element `element`; the
    /// caller writes the condition on `s.value` and the closing parenthesis.
    fn sub_value(&mut self, attr: &ResolvedAttr, element: &str, negated: bool) -> String {
        let s = self.alias("s");
        self.sql(if negated { "NOT EXISTS (" } else { "EXISTS (" });
        self.sql(&format!("SELECT 1 FROM user_values {s} WHERE {s}.user_id = {element}.user_id AND "));
        self.attr_is(&s, attr.key());
        self.sql(&format!(" AND {s}.pos = {element}.pos AND "));
        s
    }
}

/// `(SELECT id FROM value_attrs WHERE directory_id = ? AND attr = ?)`: the number value rows of
/// the index key `attr` carry in the directory (see `store::values`). A subquery, not a bound
/// number, so that filters compile without a database; both backends evaluate it once, on
/// `value_attrs`' unique index, and then probe `user_values` by the number.
pub fn attr_number(sql: &mut SqlFragment, directory_id: &str, attr: &str) {
    sql.push_sql("(SELECT id FROM value_attrs WHERE directory_id = ");
    sql.push(SqlPart::Text(directory_id.to_string()));
    sql.push_sql(" AND attr = ");
    sql.push(SqlPart::Text(attr.to_string()));
    sql.push_sql(")");
}

/// `ne` is `not eq`: (negated, positive operator).
fn positive(op: CompareOp) -> (bool, CompareOp) {
    match op {
        CompareOp::Ne => (true, CompareOp::Eq),
        op => (false, op),
    }
}

fn sql_operator(op: CompareOp) -> &'static str {
    match op {
        CompareOp::Eq => "=",
        CompareOp::Ne => "<>",
        CompareOp::Gt => ">",
        CompareOp::Ge => ">=",
        CompareOp::Lt => "<",
        CompareOp::Le => "<=",
        // Not comparison operators; text_condition handles them.
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => "=",
    }
}

/// A common attribute without a column (`meta.resourceType`) has the same value in every row:
/// evaluate the comparison in memory.
fn common_constant(kind: ResourceKind, attr: &ResolvedAttr, op: CompareOp, value: &Operand) -> bool {
    let mut meta = Map::new();
    meta.insert("resourceType".into(), Value::String(kind.as_str().into()));
    let mut resource = Map::new();
    resource.insert("meta".into(), Value::Object(meta));
    let leaf = Filter::Compare { attr: attr.clone(), op, value: value.clone() };
    filter::matches(&leaf, &resource)
}

/// The least string greater than every string starting with `prefix` (bytewise, which is code
/// point order in UTF-8), or None if there is none. Exact, unlike `prefix || U+10FFFF`, which
/// misses values continuing with U+10FFFF.
fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use crate::scim::filter::strategies;
    use crate::scim::index;
    use crate::scim::schema::{Registry, ResourceSchema};
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use std::collections::BTreeSet;

    fn user() -> ResourceSchema {
        Registry::load().unwrap().user
    }

    fn sql(text: &str, backend: Backend) -> SqlFragment {
        compile(&filter::parse(text, &user()).unwrap(), "d1", backend)
    }

    #[test]
    fn only_single_comparisons_are_cacheable_shapes() {
        let bounded = |text: &str| is_bounded_shape(&filter::parse(text, &user()).unwrap());
        assert!(bounded(r#"userName eq "a""#));
        assert!(bounded(r#"emails.value co "@example.com""#));
        assert!(bounded("title pr"));
        // Compositions multiply shapes without bound: each would stay prepared forever.
        assert!(!bounded(r#"userName eq "a" or userName eq "b""#));
        assert!(!bounded(r#"not (userName eq "a")"#));
        assert!(!bounded(r#"emails[type eq "work"]"#));
    }

    #[test]
    fn only_equalities_on_indexed_columns_are_column_equalities() {
        let equality = |text: &str| is_column_equality(&filter::parse(text, &user()).unwrap());
        assert!(equality(r#"userName eq "a""#));
        assert!(equality(r#"externalId eq "a""#));
        assert!(equality(r#"displayName eq "a""#));
        assert!(equality(r#"id eq "a""#));
        assert!(!equality(r#"userName sw "a""#));
        assert!(!equality(r#"title eq "a""#));
        assert!(!equality("active eq true"));
        assert!(!equality(r#"userName eq "a" and title eq "b""#));
    }

    #[test]
    fn golden_sql_for_representative_filters() {
        let cases = [
            (r#"userName eq "Alice""#, "users.user_name_folded = ?"),
            (r#"userName ne "Alice""#, "users.user_name_folded <> ?"),
            (
                r#"externalId sw "A""#,
                "(users.external_id IS NOT NULL AND (users.external_id >= ? AND users.external_id < ? AND \
                 substr(users.external_id, 1, ?) = ?))",
            ),
            (r#"externalId ne "x""#, "(users.external_id IS NULL OR users.external_id <> ?)"),
            (r#"externalId eq "x""#, "(users.external_id IS NOT NULL AND users.external_id = ?)"),
            ("displayName pr", "(users.display_name_folded IS NOT NULL AND users.display_name_folded <> '')"),
            ("active eq false", "users.active = ?"),
            (r#"meta.lastModified gt "2026-01-01T00:00:00Z""#, "users.modified_at > ?"),
            (r#"meta.resourceType eq "User""#, "TRUE"),
            (r#"meta.resourceType eq "Group""#, "FALSE"),
            (
                r#"title eq "Boss""#,
                "users.id IN (SELECT v1.user_id FROM user_values v1 WHERE v1.attr_id = (SELECT id FROM \
                 value_attrs WHERE directory_id = ? AND attr = ?) AND v1.value = ?)",
            ),
            (
                r#"title ne "Boss""#,
                "users.id NOT IN (SELECT v1.user_id FROM user_values v1 WHERE v1.attr_id = (SELECT id FROM \
                 value_attrs WHERE directory_id = ? AND attr = ?) AND v1.value = ?)",
            ),
            (
                r#"emails sw "a""#,
                "users.id IN (SELECT v1.user_id FROM user_values v1 WHERE v1.attr_id = (SELECT id FROM \
                 value_attrs WHERE directory_id = ? AND attr = ?) AND (v1.value >= ? AND v1.value < ? AND \
                 substr(v1.value, 1, ?) = ?))",
            ),
            (
                r#"userName ew "@x.com""#,
                "(length(users.user_name_folded) >= ? AND substr(users.user_name_folded, \
                 length(users.user_name_folded) - ? + 1) = ?)",
            ),
            (
                "emails pr",
                "users.id IN (SELECT v1.user_id FROM user_values v1 WHERE v1.attr_id IN (SELECT id FROM \
                 value_attrs WHERE directory_id = ? AND attr >= ? AND attr < ?) AND v1.value <> '')",
            ),
            (
                r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#,
                "users.id IN (SELECT v1.user_id FROM user_values v1 WHERE v1.attr_id IN (SELECT id FROM \
                 value_attrs WHERE directory_id = ? AND attr >= ? AND attr < ?) AND v1.value <> '')",
            ),
            (
                r#"emails[type eq "work" and not (value co "x")] or title pr"#,
                "(users.id IN (SELECT m1.user_id FROM user_values m1 WHERE m1.attr_id = (SELECT id FROM \
                 value_attrs WHERE directory_id = ? AND attr = ?) AND (EXISTS (SELECT 1 FROM user_values s2 \
                 WHERE s2.user_id = m1.user_id AND s2.attr_id = (SELECT id FROM value_attrs WHERE \
                 directory_id = ? AND attr = ?) AND s2.pos = m1.pos AND s2.value = ?) AND NOT (EXISTS (SELECT \
                 1 FROM user_values s3 WHERE s3.user_id = m1.user_id AND s3.attr_id = (SELECT id FROM \
                 value_attrs WHERE directory_id = ? AND attr = ?) AND s3.pos = m1.pos AND instr(s3.value, ?) \
                 > 0)))) OR users.id IN (SELECT v4.user_id FROM user_values v4 WHERE v4.attr_id = (SELECT id \
                 FROM value_attrs WHERE directory_id = ? AND attr = ?) AND v4.value <> ''))",
            ),
            (
                r#"name[givenName ne "x"]"#,
                "users.id IN (SELECT m1.user_id FROM user_values m1 WHERE m1.attr_id IN (SELECT id FROM \
                 value_attrs WHERE directory_id = ? AND attr >= ? AND attr < ?) AND NOT EXISTS (SELECT 1 FROM \
                 user_values s2 WHERE s2.user_id = m1.user_id AND s2.attr_id = (SELECT id FROM value_attrs \
                 WHERE directory_id = ? AND attr = ?) AND s2.pos = m1.pos AND s2.value = ?))",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(sql(text, Backend::Sqlite).to_debug_string(), expected, "{text}");
        }
    }

    #[test]
    fn binds_carry_encoded_operands_and_index_keys() {
        let fragment = sql(
            r#"emails[type eq "Work"] and active eq true and meta.created lt "2026-01-01T01:00:00+01:00""#,
            Backend::Sqlite,
        );
        let binds: Vec<&SqlPart> = fragment.binds().collect();
        assert_eq!(
            binds,
            vec![
                &SqlPart::Text("d1".into()),
                &SqlPart::Text("emails".into()),
                &SqlPart::Text("d1".into()),
                &SqlPart::Text("emails.type".into()),
                &SqlPart::Text("work".into()),
                &SqlPart::Bool(true),
                &SqlPart::BigInt(1_767_225_600_000),
            ]
        );
        let sw = sql(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department sw "Ops""#,
            Backend::Sqlite,
        );
        let binds: Vec<&SqlPart> = sw.binds().collect();
        assert_eq!(
            binds,
            vec![
                &SqlPart::Text("d1".into()),
                &SqlPart::Text("enterprise:department".into()),
                &SqlPart::Text("ops".into()),
                &SqlPart::Text("opt".into()),
                &SqlPart::Int(3),
                &SqlPart::Text("ops".into()),
            ]
        );
    }

    #[test]
    fn postgres_uses_strpos_and_bytewise_ranges_on_ids() {
        assert_eq!(
            sql(r#"userName co "x""#, Backend::Postgres).to_debug_string(),
            "strpos(users.user_name_folded, ?) > 0"
        );
        assert_eq!(sql(r#"id gt "a""#, Backend::Postgres).to_debug_string(), "users.id COLLATE \"C\" > ?");
        assert_eq!(sql(r#"id eq "a""#, Backend::Postgres).to_debug_string(), "users.id = ?");
        assert_eq!(sql(r#"id gt "a""#, Backend::Sqlite).to_debug_string(), "users.id > ?");
    }

    #[test]
    fn prefix_upper_bounds_are_the_least_greater_strings() {
        assert_eq!(prefix_upper_bound("ab"), Some("ac".into()));
        assert_eq!(prefix_upper_bound("enterprise:"), Some("enterprise;".into()));
        assert_eq!(prefix_upper_bound("a\u{D7FF}"), Some("a\u{E000}".into()));
        assert_eq!(prefix_upper_bound("a\u{10FFFF}"), Some("b".into()));
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
        assert_eq!(prefix_upper_bound(""), None);
    }

    // --- compile agrees with matches, on a real database. ---

    #[derive(QueryableByName)]
    struct IdRow {
        #[diesel(sql_type = Text)]
        id: String,
    }

    struct Fixture {
        conn: DbConn,
        backend: Backend,
        schema: ResourceSchema,
    }

    impl Fixture {
        fn sqlite(path: &std::path::Path) -> Fixture {
            let conn = diesel::sqlite::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
            Fixture::migrated(DbConn::Sqlite(conn), Backend::Sqlite)
        }

        fn migrated(mut conn: DbConn, backend: Backend) -> Fixture {
            crate::store::migrate::run_pending(&mut conn).unwrap();
            diesel::sql_query("DELETE FROM directories WHERE id = 'd1'").execute(&mut conn).unwrap();
            let mut insert = SqlFragment::new(backend);
            insert.push_sql("INSERT INTO directories (id, slug, name, created_at) VALUES (");
            for (i, part) in [
                SqlPart::Text("d1".into()),
                SqlPart::Text("d1".into()),
                SqlPart::Text("D1".into()),
                SqlPart::BigInt(0),
            ]
            .into_iter()
            .enumerate()
            {
                insert.push_sql(if i == 0 { "" } else { ", " });
                insert.push(part);
            }
            insert.push_sql(")");
            Statement::once(insert).execute(&mut conn).unwrap();
            Fixture { conn, backend, schema: user() }
        }

        fn execute(&mut self, parts: Vec<SqlPart>) {
            let fragment = SqlFragment { backend: self.backend, parts };
            Statement::once(fragment).execute(&mut self.conn).unwrap();
        }

        /// Stores users as the store does, and returns them rendered (with id and meta).
        fn replace_users(&mut self, users: Vec<Map<String, Value>>) -> Vec<Map<String, Value>> {
            // One transaction per case: a commit per row would dominate the test's time.
            self.conn.batch_execute("BEGIN").unwrap();
            for delete in [
                "DELETE FROM user_values WHERE user_id IN (SELECT id FROM users WHERE directory_id = 'd1')",
                "DELETE FROM users WHERE directory_id = 'd1'",
            ] {
                diesel::sql_query(delete).execute(&mut self.conn).unwrap();
            }
            let mut rendered = Vec::new();
            for (i, mut user) in users.into_iter().enumerate() {
                let id = format!("u{i}");
                let created = 1_700_000_000_000 + i64::try_from(i).unwrap() * 1_000;
                let modified = 1_700_000_005_000 - i64::try_from(i).unwrap() * 1_000;
                // userName is unique per directory: make it so without changing its case.
                let user_name = format!("{}{i}", user["userName"].as_str().unwrap());
                user.insert("userName".into(), user_name.clone().into());
                let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
                let external_id = text(user.get("externalId"));
                let display_name = text(user.get("displayName")).map(|d| index::fold(&d));
                let active = user["active"].as_bool().unwrap();
                let nullable = |v: Option<String>| match v {
                    Some(v) => SqlPart::Text(v),
                    None => SqlPart::Sql("NULL".into()),
                };
                let mut parts = vec![SqlPart::Sql(
                    "INSERT INTO users (id, directory_id, user_name, user_name_folded, external_id, \
                     display_name_folded, active, data, created_at, modified_at, version) VALUES ("
                        .into(),
                )];
                for (j, part) in [
                    SqlPart::Text(id.clone()),
                    SqlPart::Text("d1".into()),
                    SqlPart::Text(user_name.clone()),
                    SqlPart::Text(index::fold(&user_name)),
                    nullable(external_id),
                    nullable(display_name),
                    SqlPart::Bool(active),
                    SqlPart::Text("{}".into()),
                    SqlPart::BigInt(created),
                    SqlPart::BigInt(modified),
                    SqlPart::BigInt(1),
                ]
                .into_iter()
                .enumerate()
                {
                    parts.push(SqlPart::Sql(if j == 0 { "" } else { ", " }.into()));
                    parts.push(part);
                }
                parts.push(SqlPart::Sql(")".into()));
                self.execute(parts);
                let entries = index::entries(&self.schema, &user);
                let directory = crate::ids::DirectoryId("d1".into());
                crate::store::values::insert(
                    &mut self.conn,
                    &directory,
                    entries.iter().map(|e| (id.as_str(), e)),
                )
                .unwrap();
                user.insert("id".into(), id.into());
                user.insert(
                    "meta".into(),
                    serde_json::json!({
                        "resourceType": "User",
                        "created": index::format_millis(created),
                        "lastModified": index::format_millis(modified),
                    }),
                );
                rendered.push(user);
            }
            self.conn.batch_execute("COMMIT").unwrap();
            rendered
        }

        fn select(&mut self, filter: &Filter) -> BTreeSet<String> {
            let mut query = SqlFragment::new(self.backend);
            query.push_sql("SELECT users.id FROM users WHERE users.directory_id = ");
            query.push(SqlPart::Text("d1".into()));
            query.push_sql(" AND (");
            query.append(compile(filter, "d1", self.backend));
            query.push_sql(")");
            let rows: Vec<IdRow> =
                Statement::once(query).load(&mut self.conn).unwrap_or_else(|e| panic!("{filter}: {e}"));
            rows.into_iter().map(|r| r.id).collect()
        }
    }

    fn agreement(fixture: Fixture, cases: u32) {
        let fixture = std::cell::RefCell::new(fixture);
        let schema = user();
        let strategy = (
            prop::collection::vec(strategies::user(), 0..8),
            prop::collection::vec(strategies::filter(&schema), 1..8),
        );
        let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
        let result = runner.run(&strategy, |(users, filters)| {
            let mut fixture = fixture.borrow_mut();
            let rendered = fixture.replace_users(users);
            for filter in &filters {
                let expected: BTreeSet<String> = rendered
                    .iter()
                    .filter(|u| filter::matches(filter, u))
                    .map(|u| u["id"].as_str().unwrap().to_string())
                    .collect();
                let got = fixture.select(filter);
                prop_assert_eq!(&got, &expected, "filter: {}\nusers: {:#?}", filter, rendered);
            }
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }

    #[test]
    fn compiled_sql_selects_exactly_the_users_matches_accepts_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        agreement(Fixture::sqlite(&dir.path().join("filter.db")), 256);
    }

    #[test]
    fn compiled_sql_selects_exactly_the_users_matches_accepts_on_postgres() {
        use crate::test_postgres as pg;
        let cluster = pg::pg_cluster().unwrap_or_else(|e| panic!("{e}"));
        let url = cluster.create_database(&pg::unique_database_name("filter_property"), None).unwrap();
        let conn = diesel::pg::PgConnection::establish(&url).unwrap();
        agreement(Fixture::migrated(DbConn::Postgres(conn), Backend::Postgres), 256);
    }
}
