//! The query layer both backends share. Every statement is written once,
//! with PostgreSQL's `$N` placeholders; SQLite parses `$N` natively too (as
//! a named parameter), and its binder binds each parameter by that name, so
//! no SQL text is ever rewritten. Where the dialects genuinely differ
//! (schema, advisory locks, transaction modes) each backend has its own
//! hand-written code.
//!
//! Why not a query builder such as sea-query: its rusqlite binder pins an
//! older rusqlite (a second `libsqlite3-sys` cannot link beside ours), so
//! we would write the binder anyway, and a builder would only produce the
//! same static strings these constants already are.

use crate::error::Result;

/// A value bound to, or read from, a statement: the few types the catalog
/// uses, so that one piece of SQL serves both backends.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
}

impl From<&str> for Val {
    fn from(v: &str) -> Val {
        Val::Text(v.to_owned())
    }
}
impl From<String> for Val {
    fn from(v: String) -> Val {
        Val::Text(v)
    }
}
impl From<&String> for Val {
    fn from(v: &String) -> Val {
        Val::Text(v.clone())
    }
}
impl From<i64> for Val {
    fn from(v: i64) -> Val {
        Val::Int(v)
    }
}
impl From<u64> for Val {
    fn from(v: u64) -> Val {
        Val::Int(v as i64)
    }
}
impl From<bool> for Val {
    fn from(v: bool) -> Val {
        Val::Bool(v)
    }
}
impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Val {
        v.map_or(Val::Null, Into::into)
    }
}
impl From<&Option<String>> for Val {
    fn from(v: &Option<String>) -> Val {
        v.clone().into()
    }
}

macro_rules! vals {
    ($($v:expr),* $(,)?) => { &[$($crate::index::db::Val::from($v)),*] as &[$crate::index::db::Val] };
}
pub(super) use vals;

/// One result row.
#[derive(Debug)]
pub struct DbRow(pub(super) Vec<Val>);

impl DbRow {
    pub fn text(&self, i: usize) -> String {
        self.opt_text(i).unwrap_or_default()
    }
    pub fn opt_text(&self, i: usize) -> Option<String> {
        text_of(self.0[i].clone())
    }
    /// Like [`DbRow::opt_text`], but moves the text out (rows read by the
    /// thousand are not copied twice).
    pub fn take_opt_text(&mut self, i: usize) -> Option<String> {
        text_of(std::mem::replace(&mut self.0[i], Val::Null))
    }
    pub fn take_text(&mut self, i: usize) -> String {
        self.take_opt_text(i).unwrap_or_default()
    }
    pub fn int(&self, i: usize) -> i64 {
        self.opt_int(i).unwrap_or_default()
    }
    pub fn opt_int(&self, i: usize) -> Option<i64> {
        match &self.0[i] {
            Val::Int(n) => Some(*n),
            Val::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }
    pub fn bool(&self, i: usize) -> bool {
        self.opt_int(i).is_some_and(|n| n != 0)
    }
}

fn text_of(value: Val) -> Option<String> {
    match value {
        Val::Text(s) => Some(s),
        Val::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A connection or transaction of either backend.
pub trait Db {
    fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64>;
    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<DbRow>>;
    fn query_opt(&mut self, sql: &str, params: &[Val]) -> Result<Option<DbRow>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
}
