//! Row filters: the `where` of a mapping, parsed once at config load and evaluated by rowsync
//! itself for every row, so the stream (and, later, the copy) decide the same way.
//!
//! The language is a small SQL expression subset over source columns: comparisons
//! (`= <> != < <= > >=`), `AND`, `OR`, `NOT`, `IN (…)`, `IS [NOT] NULL`, `BETWEEN`, `LIKE`
//! (with `%`, `_` and `\` escapes), parentheses, number, string, TRUE/FALSE and NULL literals.
//! SQL's three-valued logic applies: a comparison with NULL is unknown, and a row is kept only
//! when the filter is true.
//!
//! How values compare, whatever the server's collations:
//! - numbers (integers, DECIMAL, FLOAT/DOUBLE, YEAR, BIT, ENUM index, SET bitmask) compare
//!   exactly as decimals, so `price = 10.50` matches a DECIMAL 10.5;
//! - strings compare by their characters: case-sensitive, accent-sensitive, and trailing
//!   spaces count (`'abc' = 'ABC'` is false; MySQL's `_ci` collations would say true);
//! - DATE/TIME/DATETIME/TIMESTAMP compare as their text `YYYY-MM-DD hh:mm:ss[.ffffff]` (in
//!   UTC for TIMESTAMP), so write literals in that form;
//! - a number compared with a string, or ENUM/SET with a string, is an error at evaluation
//!   time: the table stops rather than guess.

use std::cmp::Ordering;
use std::str::FromStr;

use bigdecimal::BigDecimal;
use sqlparser::ast::{self, BinaryOperator, Expr as SqlExpr, InTarget, UnaryOperator};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use crate::model::value::Value;

/// A literal in a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    Null,
    Bool(bool),
    Number(BigDecimal),
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Column(String),
    Literal(Literal),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    In {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    Between {
        expr: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    Like {
        expr: Box<Expr>,
        pattern: String,
        escape: char,
        negated: bool,
    },
}

/// A filter that cannot be parsed or uses something unsupported.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("{0}")]
pub struct FilterError(pub String);

/// A filter that cannot be evaluated on a row.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EvalError {
    #[error("the filter names column `{0}`, which the table does not have")]
    UnknownColumn(String),
    #[error("the filter compares {0} with {1}")]
    Incomparable(&'static str, &'static str),
}

/// A mapping's row filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    text: String,
    expr: Expr,
}

impl FromStr for Filter {
    type Err = FilterError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let expr = Parser::new(&MySqlDialect {})
            .try_with_sql(text)
            .and_then(|mut p| {
                let e = p.parse_expr()?;
                // Anything after the expression is an error, not silently ignored.
                p.expect_token(&sqlparser::tokenizer::Token::EOF)?;
                Ok(e)
            })
            .map_err(|e| FilterError(format!("cannot parse `{text}`: {e}")))?;
        Ok(Filter {
            text: text.to_owned(),
            expr: convert(&expr)?,
        })
    }
}

fn unsupported(what: impl std::fmt::Display) -> FilterError {
    FilterError(format!("`{what}` is not supported in a row filter (use comparisons, AND/OR/NOT, IN, IS [NOT] NULL, BETWEEN, LIKE)"))
}

fn literal(v: &ast::Value) -> Result<Literal, FilterError> {
    Ok(match v {
        ast::Value::Null => Literal::Null,
        ast::Value::Boolean(b) => Literal::Bool(*b),
        ast::Value::Number(n, _) => Literal::Number(
            BigDecimal::from_str(n).map_err(|_| FilterError(format!("bad number `{n}`")))?,
        ),
        ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => {
            Literal::Text(s.clone())
        }
        other => return Err(unsupported(other)),
    })
}

fn convert(e: &SqlExpr) -> Result<Expr, FilterError> {
    let b = |e: &SqlExpr| convert(e).map(Box::new);
    Ok(match e {
        SqlExpr::Identifier(id) => Expr::Column(id.value.clone()),
        SqlExpr::CompoundIdentifier(parts) => match parts.last() {
            Some(last) if parts.len() <= 3 => Expr::Column(last.value.clone()),
            _ => return Err(unsupported(e)),
        },
        SqlExpr::Value(v) => Expr::Literal(literal(&v.value)?),
        SqlExpr::Nested(inner) => convert(inner)?,
        SqlExpr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => Expr::Not(b(expr)?),
        SqlExpr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match convert(expr)? {
            Expr::Literal(Literal::Number(n)) => Expr::Literal(Literal::Number(-n)),
            _ => return Err(unsupported(e)),
        },
        SqlExpr::BinaryOp { left, op, right } => {
            let cmp = |op| Ok::<_, FilterError>(Expr::Cmp(op, b(left)?, b(right)?));
            match op {
                BinaryOperator::And => Expr::And(b(left)?, b(right)?),
                BinaryOperator::Or => Expr::Or(b(left)?, b(right)?),
                BinaryOperator::Eq => cmp(CmpOp::Eq)?,
                BinaryOperator::NotEq => cmp(CmpOp::Ne)?,
                BinaryOperator::Lt => cmp(CmpOp::Lt)?,
                BinaryOperator::LtEq => cmp(CmpOp::Le)?,
                BinaryOperator::Gt => cmp(CmpOp::Gt)?,
                BinaryOperator::GtEq => cmp(CmpOp::Ge)?,
                _ => return Err(unsupported(op)),
            }
        }
        SqlExpr::IsNull(inner) => Expr::IsNull {
            expr: b(inner)?,
            negated: false,
        },
        SqlExpr::IsNotNull(inner) => Expr::IsNull {
            expr: b(inner)?,
            negated: true,
        },
        SqlExpr::In {
            expr,
            target: InTarget::List(list),
            negated,
            ..
        } => Expr::In {
            expr: b(expr)?,
            list: list.iter().map(convert).collect::<Result<_, _>>()?,
            negated: *negated,
        },
        SqlExpr::Between {
            expr,
            negated,
            low,
            high,
        } => Expr::Between {
            expr: b(expr)?,
            low: b(low)?,
            high: b(high)?,
            negated: *negated,
        },
        SqlExpr::Like {
            negated,
            any: false,
            expr,
            pattern,
            escape_char,
        } => {
            let Expr::Literal(Literal::Text(pattern)) = convert(pattern)? else {
                return Err(FilterError("LIKE needs a string literal pattern".into()));
            };
            let escape = match escape_char {
                None => '\\',
                Some(c) => match convert(c)? {
                    Expr::Literal(Literal::Text(t)) if t.chars().count() == 1 => {
                        t.chars().next().unwrap_or('\\')
                    }
                    _ => return Err(FilterError("ESCAPE needs a one-character string".into())),
                },
            };
            Expr::Like {
                expr: b(expr)?,
                pattern,
                escape,
                negated: *negated,
            }
        }
        other => return Err(unsupported(other)),
    })
}

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Null,
    Bool(bool),
    Number(BigDecimal),
    Text(String),
    Bytes(Vec<u8>),
}

impl Scalar {
    fn kind(&self) -> &'static str {
        match self {
            Scalar::Null => "NULL",
            Scalar::Bool(_) => "a boolean",
            Scalar::Number(_) => "a number",
            Scalar::Text(_) => "a string",
            Scalar::Bytes(_) => "binary data",
        }
    }
}

fn scalar(v: &Value) -> Scalar {
    let num = |s: &str| {
        BigDecimal::from_str(s)
            .map(Scalar::Number)
            .unwrap_or(Scalar::Null)
    };
    match v {
        Value::Null => Scalar::Null,
        Value::Int(i) => Scalar::Number(BigDecimal::from(*i)),
        Value::UInt(u) | Value::Bit(u) | Value::Set(u) => Scalar::Number(BigDecimal::from(*u)),
        Value::Year(y) | Value::Enum(y) => Scalar::Number(BigDecimal::from(*y)),
        Value::Float(f) => BigDecimal::try_from(*f)
            .map(Scalar::Number)
            .unwrap_or(Scalar::Null),
        Value::Double(d) => BigDecimal::try_from(*d)
            .map(Scalar::Number)
            .unwrap_or(Scalar::Null),
        Value::Decimal(s) => num(s),
        Value::Temporal(s) | Value::Text(s) | Value::Json(s) => Scalar::Text(s.to_string()),
        Value::Bytes(b) => Scalar::Bytes(b.clone()),
    }
}

fn compare(a: &Scalar, b: &Scalar) -> Result<Option<Ordering>, EvalError> {
    Ok(match (a, b) {
        (Scalar::Null, _) | (_, Scalar::Null) => None,
        (Scalar::Number(x), Scalar::Number(y)) => Some(x.cmp(y)),
        (Scalar::Text(x), Scalar::Text(y)) => Some(x.cmp(y)),
        (Scalar::Bytes(x), Scalar::Bytes(y)) => Some(x.cmp(y)),
        (Scalar::Bytes(x), Scalar::Text(y)) => Some(x.as_slice().cmp(y.as_bytes())),
        (Scalar::Text(x), Scalar::Bytes(y)) => Some(x.as_bytes().cmp(y.as_slice())),
        (Scalar::Bool(x), Scalar::Bool(y)) => Some(x.cmp(y)),
        (Scalar::Bool(x), Scalar::Number(y)) => Some(BigDecimal::from(u8::from(*x)).cmp(y)),
        (Scalar::Number(x), Scalar::Bool(y)) => Some(x.cmp(&BigDecimal::from(u8::from(*y)))),
        (x, y) => return Err(EvalError::Incomparable(x.kind(), y.kind())),
    })
}

/// SQL LIKE over characters (bytes for binary values), case-sensitive.
fn like(text: &[char], pattern: &[char], escape: char) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((&'%', rest)) => (0..=text.len()).any(|i| like(&text[i..], rest, escape)),
        Some((&'_', rest)) => !text.is_empty() && like(&text[1..], rest, escape),
        Some((&c, rest)) if c == escape && !rest.is_empty() => {
            text.first() == Some(&rest[0]) && like(&text[1..], &rest[1..], escape)
        }
        Some((&c, rest)) => text.first() == Some(&c) && like(&text[1..], rest, escape),
    }
}

impl Filter {
    /// The filter as written in the configuration.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Column names the filter uses.
    pub fn columns(&self) -> Vec<String> {
        fn walk(e: &Expr, out: &mut Vec<String>) {
            match e {
                Expr::Column(c) => out.push(c.clone()),
                Expr::Literal(_) => {}
                Expr::Not(a) => walk(a, out),
                Expr::And(a, b) | Expr::Or(a, b) | Expr::Cmp(_, a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
                Expr::In { expr, list, .. } => {
                    walk(expr, out);
                    list.iter().for_each(|e| walk(e, out));
                }
                Expr::IsNull { expr, .. } | Expr::Like { expr, .. } => walk(expr, out),
                Expr::Between {
                    expr, low, high, ..
                } => {
                    walk(expr, out);
                    walk(low, out);
                    walk(high, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.expr, &mut out);
        out
    }

    /// Whether the row (values in `names` order) is kept: the filter is true for it.
    pub fn matches(&self, names: &[String], row: &[Value]) -> Result<bool, EvalError> {
        Ok(eval(&self.expr, names, row)? == Scalar::Bool(true))
    }
}

fn truth(s: &Scalar) -> Option<bool> {
    match s {
        Scalar::Bool(b) => Some(*b),
        Scalar::Number(n) => Some(n != &BigDecimal::from(0)),
        _ => None,
    }
}

fn bool_or_null(v: Option<bool>) -> Scalar {
    v.map(Scalar::Bool).unwrap_or(Scalar::Null)
}

fn eval(e: &Expr, names: &[String], row: &[Value]) -> Result<Scalar, EvalError> {
    let ev = |e: &Expr| eval(e, names, row);
    Ok(match e {
        Expr::Column(c) => {
            let i = names
                .iter()
                .position(|n| n.eq_ignore_ascii_case(c))
                .ok_or_else(|| EvalError::UnknownColumn(c.clone()))?;
            scalar(&row[i])
        }
        Expr::Literal(l) => match l {
            Literal::Null => Scalar::Null,
            Literal::Bool(b) => Scalar::Bool(*b),
            Literal::Number(n) => Scalar::Number(n.clone()),
            Literal::Text(t) => Scalar::Text(t.clone()),
        },
        Expr::Not(a) => bool_or_null(truth(&ev(a)?).map(|b| !b)),
        Expr::And(a, b) => match (truth(&ev(a)?), truth(&ev(b)?)) {
            (Some(false), _) | (_, Some(false)) => Scalar::Bool(false),
            (Some(true), Some(true)) => Scalar::Bool(true),
            _ => Scalar::Null,
        },
        Expr::Or(a, b) => match (truth(&ev(a)?), truth(&ev(b)?)) {
            (Some(true), _) | (_, Some(true)) => Scalar::Bool(true),
            (Some(false), Some(false)) => Scalar::Bool(false),
            _ => Scalar::Null,
        },
        Expr::Cmp(op, a, b) => bool_or_null(compare(&ev(a)?, &ev(b)?)?.map(|o| match op {
            CmpOp::Eq => o == Ordering::Equal,
            CmpOp::Ne => o != Ordering::Equal,
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Le => o != Ordering::Greater,
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Ge => o != Ordering::Less,
        })),
        Expr::IsNull { expr, negated } => Scalar::Bool((ev(expr)? == Scalar::Null) != *negated),
        Expr::In {
            expr,
            list,
            negated,
        } => {
            let v = ev(expr)?;
            let mut saw_null = false;
            let mut found = false;
            for item in list {
                match compare(&v, &ev(item)?)? {
                    Some(Ordering::Equal) => {
                        found = true;
                        break;
                    }
                    None => saw_null = true,
                    _ => {}
                }
            }
            match (found, saw_null) {
                (true, _) => Scalar::Bool(!negated),
                (false, true) => Scalar::Null,
                (false, false) => Scalar::Bool(*negated),
            }
        }
        Expr::Between {
            expr,
            low,
            high,
            negated,
        } => {
            let v = ev(expr)?;
            let lo = compare(&v, &ev(low)?)?.map(|o| o != Ordering::Less);
            let hi = compare(&v, &ev(high)?)?.map(|o| o != Ordering::Greater);
            let inside = match (lo, hi) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            };
            bool_or_null(inside.map(|b| b != *negated))
        }
        Expr::Like {
            expr,
            pattern,
            escape,
            negated,
        } => {
            let pattern: Vec<char> = pattern.chars().collect();
            let text: Option<Vec<char>> = match ev(expr)? {
                Scalar::Null => None,
                Scalar::Text(t) => Some(t.chars().collect()),
                Scalar::Bytes(b) => Some(b.iter().map(|&x| char::from(x)).collect()),
                other => return Err(EvalError::Incomparable(other.kind(), "a LIKE pattern")),
            };
            bool_or_null(text.map(|t| like(&t, &pattern, *escape) != *negated))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["id", "name", "deleted", "category_id", "price", "note"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn row(name: &str, deleted: i64, cat: i64, price: &str, note: Option<&str>) -> Vec<Value> {
        vec![
            Value::UInt(1),
            Value::Text(name.into()),
            Value::Int(deleted),
            Value::Int(cat),
            Value::Decimal(price.into()),
            note.map(|n| Value::Text(n.into())).unwrap_or(Value::Null),
        ]
    }

    fn keeps(filter: &str, r: &[Value]) -> bool {
        filter
            .parse::<Filter>()
            .unwrap()
            .matches(&names(), r)
            .unwrap()
    }

    #[test]
    fn the_issue_example() {
        let f = "deleted = 0 AND category_id IN (1, 2, 3)";
        assert!(keeps(f, &row("a", 0, 2, "1.00", None)));
        assert!(!keeps(f, &row("a", 1, 2, "1.00", None)));
        assert!(!keeps(f, &row("a", 0, 4, "1.00", None)));
    }

    #[test]
    fn strings_compare_case_sensitively_with_trailing_spaces() {
        assert!(keeps("name = 'abc'", &row("abc", 0, 1, "1", None)));
        assert!(!keeps("name = 'abc'", &row("ABC", 0, 1, "1", None)));
        assert!(!keeps("name = 'abc'", &row("abc ", 0, 1, "1", None)));
        assert!(keeps("name LIKE 'a_c%'", &row("abcdef", 0, 1, "1", None)));
        assert!(!keeps("name LIKE 'A%'", &row("abc", 0, 1, "1", None)));
        assert!(keeps("name LIKE '50\\%'", &row("50%", 0, 1, "1", None)));
        assert!(!keeps("name LIKE '50\\%'", &row("500", 0, 1, "1", None)));
    }

    #[test]
    fn decimals_compare_exactly_and_nulls_are_unknown() {
        assert!(keeps("price = 10.5", &row("a", 0, 1, "10.50", None)));
        assert!(keeps(
            "price BETWEEN -1 AND 10.5",
            &row("a", 0, 1, "10.50", None)
        ));
        assert!(!keeps(
            "price > 99999999999999999999.000000000000000000001",
            &row("a", 0, 1, "99999999999999999999", None)
        ));
        // NULL: unknown, so neither the test nor its negation keeps the row.
        assert!(!keeps("note = 'x'", &row("a", 0, 1, "1", None)));
        assert!(!keeps("NOT (note = 'x')", &row("a", 0, 1, "1", None)));
        assert!(keeps("note IS NULL", &row("a", 0, 1, "1", None)));
        assert!(keeps(
            "note IS NULL OR note <> 'x'",
            &row("a", 0, 1, "1", None)
        ));
        assert!(!keeps(
            "category_id NOT IN (1, NULL)",
            &row("a", 0, 2, "1", None)
        ));
    }

    #[test]
    fn bad_filters_are_rejected_with_the_reason() {
        let err = "deleted = = 0".parse::<Filter>().unwrap_err().to_string();
        assert!(err.contains("cannot parse"), "{err}");
        let err = "UPPER(name) = 'A'"
            .parse::<Filter>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("not supported"), "{err}");
        let err = "id IN (SELECT 1)"
            .parse::<Filter>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("not supported"), "{err}");
        let err = "id = 1 garbage".parse::<Filter>().unwrap_err().to_string();
        assert!(err.contains("cannot parse"), "{err}");
        let f: Filter = "missing = 1".parse().unwrap();
        assert_eq!(
            f.matches(&names(), &row("a", 0, 1, "1", None)),
            Err(EvalError::UnknownColumn("missing".into()))
        );
        let f: Filter = "name > 3".parse().unwrap();
        assert!(f.matches(&names(), &row("a", 0, 1, "1", None)).is_err());
    }
}
