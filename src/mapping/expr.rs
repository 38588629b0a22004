//! Mapping expressions: what an administrator writes where one attribute name is not enough.
//!
//! ```text
//! expr  := term ('+' term)*                     '+' concatenates
//! term  := 'text' | "text" | ATTRIBUTE | FUNCTION '(' [expr (',' expr)*] ')' | '(' expr ')'
//! ```
//! An attribute stands for its first value (nothing when absent or empty). Functions: `join(sep,
//! a, b, ...)` (the non-empty values joined), `concat(a, b, ...)`, `lower(x)`, `upper(x)`,
//! `trim(x)`, `default(x, fallback)`, `coalesce(a, b, ...)` (the first non-empty),
//! `replace(x, 'regex', 'replacement')`, `switch(x, 'key', 'value', ..., ['default'])`. An empty
//! result means "no value". Errors name the column (1-based, in characters) of the expression.

use std::fmt;

use regex::Regex;

use crate::source::entry::{NotText, RawEntry};

/// A parsed expression.
#[derive(Debug, Clone)]
pub(crate) enum Expr {
    Text(String),
    Attr(String),
    Concat(Vec<Expr>),
    Join(Box<Expr>, Vec<Expr>),
    Lower(Box<Expr>),
    Upper(Box<Expr>),
    Trim(Box<Expr>),
    Default(Box<Expr>, Box<Expr>),
    Coalesce(Vec<Expr>),
    Replace(Box<Expr>, Regex, String),
    Switch(Box<Expr>, Vec<(String, Expr)>, Option<Box<Expr>>),
}

/// A syntax error, at a character column of the expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExprError {
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

const FUNCTIONS: &str = "join, concat, lower, upper, trim, default, coalesce, replace, switch";

/// Longest expression accepted: a mapping is a line of configuration, not a program.
const MAX_LEN: usize = 4096;
/// Longest value an expression may produce (bytes), at any step: nested replacements could
/// otherwise grow a value without bound (time and memory).
pub(crate) const MAX_VALUE: usize = 64 * 1024;

/// Why an expression gave no value for an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EvalError {
    #[error(transparent)]
    NotText(#[from] NotText),
    #[error("a mapping expression's value grew past {MAX_VALUE} bytes")]
    TooLong,
}

fn bounded(s: String) -> Result<String, EvalError> {
    if s.len() > MAX_VALUE {
        Err(EvalError::TooLong)
    } else {
        Ok(s)
    }
}
/// Deepest nesting accepted (keeps the recursive parser's stack small).
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Text(String),
    Ident(String),
    Open,
    Close,
    Comma,
    Plus,
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, ExprError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |at: usize, m: String| ExprError {
        column: at + 1,
        message: m,
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' | ')' | ',' | '+' => {
                out.push((
                    i,
                    match c {
                        '(' => Tok::Open,
                        ')' => Tok::Close,
                        ',' => Tok::Comma,
                        _ => Tok::Plus,
                    },
                ));
                i += 1;
            }
            '\'' | '"' => {
                let start = i;
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(err(start, "a text that is never closed".into())),
                        Some('\\') => {
                            match chars.get(i + 1) {
                                Some(e @ ('\\' | '\'' | '"')) => text.push(*e),
                                Some('n') => text.push('\n'),
                                Some('t') => text.push('\t'),
                                _ => {
                                    return Err(err(
                                        i,
                                        "unknown escape (use \\\\, \\', \\\", \\n or \\t)".into(),
                                    ))
                                }
                            }
                            i += 2;
                        }
                        Some(q) if *q == c => {
                            i += 1;
                            break;
                        }
                        Some(o) => {
                            text.push(*o);
                            i += 1;
                        }
                    }
                }
                out.push((start, Tok::Text(text)));
            }
            c if c.is_ascii_alphabetic() => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '-') {
                    i += 1;
                }
                out.push((start, Tok::Ident(chars[start..i].iter().collect())));
            }
            other => return Err(err(i, format!("unexpected `{other}`"))),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    /// Column reported for an unexpected end.
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn column(&self) -> usize {
        self.toks.get(self.pos).map(|(c, _)| *c).unwrap_or(self.end) + 1
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, ExprError> {
        Err(ExprError {
            column: self.column(),
            message: message.into(),
        })
    }

    fn expr(&mut self, depth: usize) -> Result<Expr, ExprError> {
        if depth > MAX_DEPTH {
            return self.fail("nested too deeply");
        }
        let mut parts = vec![self.term(depth)?];
        while self.peek() == Some(&Tok::Plus) {
            self.pos += 1;
            parts.push(self.term(depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::Concat(parts)
        })
    }

    fn term(&mut self, depth: usize) -> Result<Expr, ExprError> {
        let col = self.column();
        match self.toks.get(self.pos).map(|(_, t)| t.clone()) {
            Some(Tok::Text(t)) => {
                self.pos += 1;
                Ok(Expr::Text(t))
            }
            Some(Tok::Open) => {
                self.pos += 1;
                let e = self.expr(depth + 1)?;
                if self.peek() != Some(&Tok::Close) {
                    return self.fail("expected `)`");
                }
                self.pos += 1;
                Ok(e)
            }
            Some(Tok::Ident(name)) => {
                self.pos += 1;
                if self.peek() != Some(&Tok::Open) {
                    return Ok(Expr::Attr(name));
                }
                self.pos += 1;
                let mut args = Vec::new();
                let mut arg_cols = Vec::new();
                if self.peek() != Some(&Tok::Close) {
                    loop {
                        arg_cols.push(self.column());
                        args.push(self.expr(depth + 1)?);
                        match self.peek() {
                            Some(Tok::Comma) => self.pos += 1,
                            Some(Tok::Close) => break,
                            _ => return self.fail("expected `,` or `)`"),
                        }
                    }
                }
                self.pos += 1;
                call(&name, args, col, &arg_cols)
            }
            Some(_) => self.fail("expected a text, an attribute or a function"),
            None => self.fail("the expression ends too early"),
        }
    }
}

fn call(
    name: &str,
    mut args: Vec<Expr>,
    col: usize,
    arg_cols: &[usize],
) -> Result<Expr, ExprError> {
    let fail = |m: String| ExprError {
        column: col,
        message: m,
    };
    let arity = |n: usize, args: &[Expr]| {
        if args.len() == n {
            Ok(())
        } else {
            Err(fail(format!(
                "{name}() takes {n} argument(s), {} given",
                args.len()
            )))
        }
    };
    let at_least = |n: usize, args: &[Expr]| {
        if args.len() >= n {
            Ok(())
        } else {
            Err(fail(format!(
                "{name}() takes at least {n} arguments, {} given",
                args.len()
            )))
        }
    };
    let literal = |e: &Expr, i: usize, what: &str| match e {
        Expr::Text(t) => Ok(t.clone()),
        _ => Err(ExprError {
            column: arg_cols.get(i).copied().unwrap_or(col),
            message: format!("{name}(): the {what} must be a quoted text"),
        }),
    };
    match name.to_ascii_lowercase().as_str() {
        "concat" => {
            at_least(1, &args)?;
            Ok(Expr::Concat(args))
        }
        "join" => {
            at_least(2, &args)?;
            let sep = args.remove(0);
            Ok(Expr::Join(Box::new(sep), args))
        }
        "lower" | "upper" | "trim" => {
            arity(1, &args)?;
            let x = Box::new(args.remove(0));
            Ok(match name.to_ascii_lowercase().as_str() {
                "lower" => Expr::Lower(x),
                "upper" => Expr::Upper(x),
                _ => Expr::Trim(x),
            })
        }
        "default" => {
            arity(2, &args)?;
            let fallback = Box::new(args.remove(1));
            Ok(Expr::Default(Box::new(args.remove(0)), fallback))
        }
        "coalesce" => {
            at_least(1, &args)?;
            Ok(Expr::Coalesce(args))
        }
        "replace" => {
            arity(3, &args)?;
            let pattern = literal(&args[1], 1, "pattern")?;
            let with = literal(&args[2], 2, "replacement")?;
            let re = regex::RegexBuilder::new(&pattern)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| ExprError {
                    column: arg_cols.get(1).copied().unwrap_or(col),
                    message: format!("replace(): not a valid regular expression: {e}"),
                })?;
            Ok(Expr::Replace(Box::new(args.remove(0)), re, with))
        }
        "switch" => {
            at_least(3, &args)?;
            let x = Box::new(args.remove(0));
            let default = (args.len() % 2 == 1).then(|| Box::new(args.remove(args.len() - 1)));
            let mut cases = Vec::new();
            let mut it = args.into_iter().enumerate();
            while let (Some((i, k)), Some((_, v))) = (it.next(), it.next()) {
                cases.push((literal(&k, i + 1, "key")?, v));
            }
            Ok(Expr::Switch(x, cases, default))
        }
        _ => Err(fail(format!(
            "unknown function `{name}` (known: {FUNCTIONS})"
        ))),
    }
}

impl Expr {
    pub(crate) fn parse(src: &str) -> Result<Expr, ExprError> {
        if src.chars().count() > MAX_LEN {
            return Err(ExprError {
                column: MAX_LEN,
                message: format!("longer than {MAX_LEN} characters"),
            });
        }
        let toks = lex(src)?;
        let mut p = Parser {
            toks,
            pos: 0,
            end: src.chars().count(),
        };
        let e = p.expr(0)?;
        if p.pos < p.toks.len() {
            return p.fail("unexpected text after the expression");
        }
        Ok(e)
    }

    /// The directory attributes the expression reads.
    pub(crate) fn attributes(&self, out: &mut Vec<String>) {
        match self {
            Expr::Text(_) => {}
            Expr::Attr(a) => out.push(a.clone()),
            Expr::Concat(v) | Expr::Coalesce(v) => v.iter().for_each(|e| e.attributes(out)),
            Expr::Join(s, v) => {
                s.attributes(out);
                v.iter().for_each(|e| e.attributes(out));
            }
            Expr::Lower(x) | Expr::Upper(x) | Expr::Trim(x) | Expr::Replace(x, _, _) => {
                x.attributes(out)
            }
            Expr::Default(a, b) => {
                a.attributes(out);
                b.attributes(out);
            }
            Expr::Switch(x, cases, d) => {
                x.attributes(out);
                cases.iter().for_each(|(_, v)| v.attributes(out));
                if let Some(d) = d {
                    d.attributes(out);
                }
            }
        }
    }

    /// The value for an entry; `None` when empty.
    pub(crate) fn eval(&self, e: &RawEntry) -> Result<Option<String>, EvalError> {
        self.eval_with(&|name| e.first_text(&[name.to_string()]))
    }

    /// The value with attributes looked up by `attr` (tests, previews).
    pub(crate) fn eval_with(
        &self,
        attr: &dyn Fn(&str) -> Result<Option<String>, NotText>,
    ) -> Result<Option<String>, EvalError> {
        let some = |s: String| (!s.is_empty()).then_some(s);
        Ok(match self {
            Expr::Text(t) => some(t.clone()),
            Expr::Attr(a) => attr(a)?.and_then(some),
            Expr::Concat(parts) => {
                let mut s = String::new();
                for p in parts {
                    s.push_str(&p.eval_with(attr)?.unwrap_or_default());
                    s = bounded(s)?;
                }
                some(s)
            }
            Expr::Join(sep, parts) => {
                let sep = sep.eval_with(attr)?.unwrap_or_default();
                let mut vals = Vec::new();
                for p in parts {
                    if let Some(v) = p.eval_with(attr)? {
                        vals.push(v);
                    }
                }
                some(bounded(vals.join(&sep))?)
            }
            Expr::Lower(x) => x.eval_with(attr)?.map(|v| v.to_lowercase()),
            Expr::Upper(x) => match x.eval_with(attr)? {
                Some(v) => Some(bounded(v.to_uppercase())?),
                None => None,
            },
            Expr::Trim(x) => x.eval_with(attr)?.and_then(|v| some(v.trim().to_string())),
            Expr::Default(x, d) => match x.eval_with(attr)? {
                Some(v) => Some(v),
                None => d.eval_with(attr)?,
            },
            Expr::Coalesce(parts) => {
                for p in parts {
                    if let Some(v) = p.eval_with(attr)? {
                        return Ok(Some(v));
                    }
                }
                None
            }
            Expr::Replace(x, re, with) => match x.eval_with(attr)? {
                Some(v) => some(replace_bounded(re, &v, with)?),
                None => None,
            },
            Expr::Switch(x, cases, d) => {
                let v = x.eval_with(attr)?;
                match cases.iter().find(|(k, _)| Some(k) == v.as_ref()) {
                    Some((_, out)) => out.eval_with(attr)?,
                    None => match d {
                        Some(d) => d.eval_with(attr)?,
                        None => None,
                    },
                }
            }
        })
    }
}

/// `re.replace_all(text, with)`, stopping as soon as the result grows past [`MAX_VALUE`].
fn replace_bounded(re: &Regex, text: &str, with: &str) -> Result<String, EvalError> {
    let mut out = String::new();
    let mut last = 0;
    for caps in re.captures_iter(text) {
        let Some(m) = caps.get(0) else { continue };
        out.push_str(&text[last..m.start()]);
        caps.expand(with, &mut out);
        last = m.end();
        if out.len() > MAX_VALUE {
            return Err(EvalError::TooLong);
        }
    }
    out.push_str(&text[last..]);
    bounded(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn eval(src: &str, attrs: &[(&str, &str)]) -> Option<String> {
        let map: HashMap<String, String> = attrs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        Expr::parse(src)
            .unwrap()
            .eval_with(&|a| Ok(map.get(&a.to_ascii_lowercase()).cloned()))
            .unwrap()
    }

    #[test]
    fn each_function_does_what_the_reference_says() {
        let a = [
            ("givenName", "Ann"),
            ("sn", "Archer"),
            ("employeeType", "C"),
            ("mail", "Ann.Archer@Corp.example"),
        ];
        assert_eq!(
            eval("join(' ', givenName, sn)", &a).as_deref(),
            Some("Ann Archer")
        );
        assert_eq!(
            eval("join(' ', givenName, missing, sn)", &a).as_deref(),
            Some("Ann Archer")
        );
        assert_eq!(
            eval("givenName + '.' + sn", &a).as_deref(),
            Some("Ann.Archer")
        );
        assert_eq!(
            eval("concat(lower(givenName), \"_\", upper(sn))", &a).as_deref(),
            Some("ann_ARCHER")
        );
        assert_eq!(eval("default(missing, 'n/a')", &a).as_deref(), Some("n/a"));
        assert_eq!(eval("default(sn, 'n/a')", &a).as_deref(), Some("Archer"));
        assert_eq!(
            eval("coalesce(missing, other, sn, givenName)", &a).as_deref(),
            Some("Archer")
        );
        assert_eq!(
            eval("lower(replace(mail, '@.*$', ''))", &a).as_deref(),
            Some("ann.archer")
        );
        assert_eq!(
            eval(
                "switch(employeeType, 'C', 'Contractor', 'E', 'Employee')",
                &a
            )
            .as_deref(),
            Some("Contractor")
        );
        assert_eq!(
            eval("switch(sn, 'C', 'Contractor', 'Staff')", &a).as_deref(),
            Some("Staff")
        );
        assert_eq!(eval("switch(sn, 'C', 'Contractor')", &a), None);
        assert_eq!(eval("'Contractor'", &a).as_deref(), Some("Contractor"));
        assert_eq!(eval("trim('  x ')", &a).as_deref(), Some("x"));
        assert_eq!(
            eval("missing + ''", &a),
            None,
            "an empty result is no value"
        );
        assert_eq!(eval("'it\\'s'", &a).as_deref(), Some("it's"));
    }

    #[test]
    fn a_value_cannot_grow_without_bound() {
        let mut src = "sn".to_string();
        for _ in 0..10 {
            src = format!("replace({src}, '(?s).', '{}')", "$0".repeat(16));
        }
        let e = Expr::parse(&src).unwrap();
        let started = std::time::Instant::now();
        let r = e.eval_with(&|_| Ok(Some("Archer".into())));
        assert_eq!(r, Err(EvalError::TooLong));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let e = Expr::parse("replace(replace(replace(sn, '', 'XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX'), '', 'XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX'), '', 'XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX')").unwrap();
        assert_eq!(
            e.eval_with(&|_| Ok(Some("Archer".into()))),
            Err(EvalError::TooLong)
        );
        assert_eq!(
            eval("replace(sn, '(A)', '[$1]')", &[("sn", "Archer")]).as_deref(),
            Some("[A]rcher")
        );
    }

    #[test]
    fn mistakes_are_reported_at_their_column() {
        let e = Expr::parse("join(' ', lowr(sn))").unwrap_err();
        assert_eq!(e.column, 11);
        assert!(e.message.contains("unknown function `lowr`"), "{e}");
        let e = Expr::parse("lower(sn").unwrap_err();
        assert_eq!(e.column, 9);
        let e = Expr::parse("replace(sn, '(', '')").unwrap_err();
        assert_eq!(e.column, 13, "{e}");
        let e = Expr::parse("replace(sn, x, '')").unwrap_err();
        assert!(e.message.contains("quoted text"), "{e}");
        let e = Expr::parse("'open").unwrap_err();
        assert_eq!(e.column, 1);
        let e = Expr::parse("sn sn").unwrap_err();
        assert_eq!(e.column, 4);
        let e = Expr::parse("upper(a, b)").unwrap_err();
        assert!(e.message.contains("takes 1"), "{e}");
        assert!(Expr::parse(&"(".repeat(100)).is_err());
        assert!(Expr::parse("sn # x").is_err());
    }

    #[test]
    fn the_attributes_read_are_listed() {
        let mut out = Vec::new();
        Expr::parse("switch(employeeType, 'C', join(' ', givenName, sn), mail)")
            .unwrap()
            .attributes(&mut out);
        assert_eq!(out, ["employeeType", "givenName", "sn", "mail"]);
    }

    proptest! {
        /// Whatever is written, parsing answers (a value or an error with a column inside the
        /// text), and evaluating a parsed expression never fails on text attributes.
        #[test]
        fn any_text_parses_or_errors_without_panicking(src in "[a-z(),+'\" .\\\\]{0,40}") {
            match Expr::parse(&src) {
                Ok(e) => { let _ = e.eval_with(&|a| Ok(Some(a.to_string()))); }
                Err(e) => prop_assert!(e.column >= 1 && e.column <= src.chars().count() + 1),
            }
        }
    }
}
