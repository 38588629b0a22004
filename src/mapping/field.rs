//! Where one mapped value comes from: the first of some attributes that has a value, or an
//! expression over attributes (see `expr.rs`).

use super::expr::{EvalError, Expr};
use crate::source::entry::RawEntry;

#[derive(Debug, Clone)]
pub(crate) enum FieldSource {
    /// The first of these attributes that has a value; none means "not mapped".
    Attrs(Vec<String>),
    /// An expression, kept with the text it was written as (messages, the config fingerprint).
    Expr { text: String, expr: Expr },
}

impl FieldSource {
    pub(crate) fn is_unmapped(&self) -> bool {
        matches!(self, FieldSource::Attrs(v) if v.is_empty())
    }

    /// The directory attributes it reads (a search must ask for them).
    pub(crate) fn attributes(&self) -> Vec<String> {
        match self {
            FieldSource::Attrs(v) => v.clone(),
            FieldSource::Expr { expr, .. } => {
                let mut out = Vec::new();
                expr.attributes(&mut out);
                out
            }
        }
    }

    /// The value for an entry; `None` when it has none (or the expression gives nothing).
    pub(crate) fn value(&self, e: &RawEntry) -> Result<Option<String>, EvalError> {
        match self {
            FieldSource::Attrs(names) => Ok(e.first_text(names)?),
            FieldSource::Expr { expr, .. } => expr.eval(e),
        }
    }

    /// [`FieldSource::value`] as a user's field holds it (a short value without an
    /// allocation of its own).
    pub(crate) fn text(&self, e: &RawEntry) -> Result<Option<crate::model::Text>, EvalError> {
        match self {
            FieldSource::Attrs(names) => Ok(e.first_str(names)?.map(Into::into)),
            FieldSource::Expr { expr, .. } => Ok(expr.eval(e)?.map(Into::into)),
        }
    }

    /// For messages: `uid / mail`, or the expression.
    pub(crate) fn describe(&self) -> String {
        match self {
            FieldSource::Attrs(v) => v.join(" / "),
            FieldSource::Expr { text, .. } => format!("the expression `{text}`"),
        }
    }
}

impl PartialEq for FieldSource {
    fn eq(&self, other: &FieldSource) -> bool {
        match (self, other) {
            (FieldSource::Attrs(a), FieldSource::Attrs(b)) => a == b,
            (FieldSource::Expr { text: a, .. }, FieldSource::Expr { text: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl PartialEq<Vec<&str>> for FieldSource {
    fn eq(&self, other: &Vec<&str>) -> bool {
        matches!(self, FieldSource::Attrs(a) if a.iter().map(String::as_str).eq(other.iter().copied()))
    }
}
