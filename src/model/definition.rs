//! A source table's definition as a replica needs it: its column definition lines (as a
//! replica takes them: no generated expressions, no keys or constraints of the source's own),
//! its primary key, its plain secondary keys and its charset options. Read from `SHOW CREATE
//! TABLE` text or from a `CREATE TABLE` statement of the stream; both are parsed here, so the
//! source and the sink agree on one form.

use sqlparser::ast::{ColumnOption, Expr, Value as SqlValue};
use sqlparser::dialect::MySqlDialect;

use super::name::{quote_ident, TableName};
use super::table::KeyDefinition;

/// A source table definition as `SHOW CREATE TABLE` prints it, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDefinition {
    pub table: TableName,
    /// (column name, full definition line without trailing comma)
    pub columns: Vec<(String, String)>,
    pub primary_key: Vec<String>,
    /// Non-unique secondary key lines with the columns they use.
    pub keys: Vec<(String, Vec<String>)>,
    /// `DEFAULT CHARSET=… COLLATE=…` and similar options worth keeping.
    pub options: String,
}

/// Backticked names inside the first parenthesis group of a key line.
fn key_columns(line: &str) -> Vec<String> {
    let Some(open) = line.find('(') else {
        return vec![];
    };
    let inner = &line[open + 1..];
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    let mut depth = 0;
    while let Some(c) = chars.next() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => break,
            ')' => depth -= 1,
            '`' if depth == 0 => {
                let mut name = String::new();
                while let Some(c) = chars.next() {
                    if c == '`' {
                        if chars.peek() == Some(&'`') {
                            chars.next();
                            name.push('`');
                            continue;
                        }
                        break;
                    }
                    name.push(c);
                }
                out.push(name);
            }
            _ => {}
        }
    }
    out
}

fn leading_ident(line: &str) -> Option<String> {
    key_columns(&format!("({line})")).into_iter().next()
}

impl SourceDefinition {
    pub fn parse(table: TableName, create: &str) -> Result<SourceDefinition, String> {
        let mut columns = Vec::new();
        let mut primary_key = Vec::new();
        let mut keys = Vec::new();
        let mut options = String::new();
        for raw in create.lines().skip(1) {
            let line = raw.trim().trim_end_matches(',');
            if line.starts_with('`') {
                let name = leading_ident(line).ok_or("unreadable column line")?;
                columns.push((name, line.to_owned()));
            } else if line.starts_with("PRIMARY KEY") {
                primary_key = key_columns(line);
            } else if line.starts_with("KEY ")
                || line.starts_with("INDEX ")
                || line.starts_with("FULLTEXT ")
                || line.starts_with("SPATIAL ")
            {
                keys.push((line.to_owned(), key_columns(line)));
            } else if let Some(rest) = line.strip_prefix(')') {
                // Keep charset and collation; engine, AUTO_INCREMENT, partitioning are ours.
                for opt in rest.split_whitespace() {
                    let upper = opt.to_ascii_uppercase();
                    if upper.starts_with("CHARSET=") || upper.starts_with("COLLATE=") {
                        options.push_str(" DEFAULT ");
                        options.push_str(opt);
                    }
                }
                options = options.replace(" DEFAULT DEFAULT", " DEFAULT");
                break;
            }
            // UNIQUE KEY, CONSTRAINT … FOREIGN KEY / CHECK: dropped on purpose.
        }
        if columns.is_empty() {
            return Err("no columns found".into());
        }
        Ok(SourceDefinition {
            table,
            columns,
            primary_key,
            keys,
            options,
        })
    }

    /// The definition a `CREATE TABLE` statement of the stream gives `table`, so a replica is
    /// made as the table was at that point of the stream, whatever happened to it since.
    /// `Err` when the statement does not spell the definition out (`LIKE`, `SELECT`).
    pub fn from_create_statement(table: TableName, sql: &str) -> Result<SourceDefinition, String> {
        use sqlparser::ast::{Statement, TableConstraint};
        let statements = sqlparser::parser::Parser::parse_sql(&MySqlDialect {}, sql)
            .map_err(|e| format!("cannot parse the CREATE TABLE ({e})"))?;
        let [Statement::CreateTable(create)] = statements.as_slice() else {
            return Err("not a single CREATE TABLE statement".into());
        };
        if create.like.is_some() || create.clone.is_some() {
            return Err("CREATE TABLE … LIKE takes another table's definition".into());
        }
        if create.query.is_some() {
            return Err("CREATE TABLE … SELECT takes its columns from a query".into());
        }
        let plain = |e: &Expr| match e {
            Expr::Identifier(i) => Some(i.value.clone()),
            // A key prefix, `col(10)`, is a call in sqlparser's eyes.
            Expr::Function(f) => f
                .name
                .0
                .last()
                .map(|p| p.to_string().trim_matches('`').to_owned()),
            _ => None,
        };
        let mut columns = Vec::new();
        let mut primary_key = Vec::new();
        for c in &create.columns {
            let name = c.name.value.clone();
            if c.options
                .iter()
                .any(|o| matches!(o.option, ColumnOption::PrimaryKey(_)))
            {
                primary_key.push(name.clone());
            }
            let options: Vec<String> = c
                .options
                .iter()
                .filter_map(|o| replica_option(&o.option))
                .collect();
            let line = column_definition(&name, &c.data_type, &options);
            columns.push((name, line));
        }
        let mut keys = Vec::new();
        for k in &create.constraints {
            match k {
                TableConstraint::PrimaryKey(pk) => {
                    primary_key = pk
                        .columns
                        .iter()
                        .map(|c| match &c.column.expr {
                            Expr::Identifier(i) => Ok(i.value.clone()),
                            other => Err(format!("primary key part `{other}` is not a column")),
                        })
                        .collect::<Result<_, _>>()?;
                }
                TableConstraint::Index(ix) => {
                    let cols: Vec<String> = ix
                        .columns
                        .iter()
                        .filter_map(|c| plain(&c.column.expr))
                        .collect();
                    if let (Some(name), false) = (&ix.name, cols.len() < ix.columns.len()) {
                        let parts: Vec<String> = ix
                            .columns
                            .iter()
                            .map(|c| c.column.expr.to_string())
                            .collect();
                        keys.push((
                            format!("KEY {} ({})", quote_ident(&name.value), parts.join(", ")),
                            cols,
                        ));
                    }
                }
                // UNIQUE, FOREIGN KEY, CHECK, FULLTEXT: dropped on purpose, as in `parse`.
                _ => {}
            }
        }
        if columns.is_empty() {
            return Err("the CREATE TABLE names no columns".into());
        }
        let mut options = String::new();
        if let sqlparser::ast::CreateTableOptions::Plain(list) = &create.table_options {
            for o in list {
                let text = o.to_string();
                let upper = text.to_ascii_uppercase();
                let kept = [
                    "DEFAULT CHARSET",
                    "CHARSET",
                    "DEFAULT CHARACTER SET",
                    "CHARACTER SET",
                ]
                .iter()
                .chain(["DEFAULT COLLATE", "COLLATE"].iter())
                .any(|p| upper.starts_with(p));
                if kept {
                    options.push(' ');
                    options.push_str(&text);
                }
            }
        }
        Ok(SourceDefinition {
            table,
            columns,
            primary_key,
            keys,
            options,
        })
    }

    /// The table's default charset (`DEFAULT CHARSET=x`), which columns without their own
    /// `CHARACTER SET` have.
    pub fn default_charset(&self) -> Option<String> {
        let upper = self.options.to_ascii_uppercase();
        let at = upper.find("CHARSET=")? + "CHARSET=".len();
        self.options[at..]
            .split_whitespace()
            .next()
            .map(str::to_owned)
    }

    /// The secondary keys a replica with `columns` gets.
    pub fn secondary_keys(&self, columns: &[String]) -> Vec<KeyDefinition> {
        self.keys
            .iter()
            .filter(|(_, cols)| cols.iter().all(|c| columns.contains(c)))
            .filter_map(|(line, _)| {
                let name = leading_ident(&line[line.find('`')?..])?;
                Some(KeyDefinition {
                    name,
                    definition: line.clone(),
                })
            })
            .collect()
    }

    /// `CREATE TABLE` for the replica named `replica` with `columns`, and its secondary keys
    /// unless `keys` is false.
    pub fn replica_ddl(&self, replica: &str, columns: &[String], keys: bool) -> String {
        let mut parts: Vec<String> = columns
            .iter()
            .filter_map(|c| self.columns.iter().find(|(n, _)| n == c))
            .map(|(_, def)| strip_generated(def))
            .collect();
        parts.push(format!(
            "PRIMARY KEY ({})",
            self.primary_key
                .iter()
                .map(|k| quote_ident(k))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        if keys {
            parts.extend(
                self.secondary_keys(columns)
                    .into_iter()
                    .map(|k| k.definition),
            );
        }
        format!(
            "CREATE TABLE {} (\n  {}\n) ENGINE=InnoDB{}",
            quote_ident(replica),
            parts.join(",\n  "),
            self.options
        )
    }
}

/// A generated column becomes a plain one in the replica: its values arrive in the row image.
fn strip_generated(def: &str) -> String {
    let upper = def.to_ascii_uppercase();
    let at = upper
        .find(" GENERATED ALWAYS AS ")
        .or_else(|| upper.find(" AS ("));
    let Some(at) = at else {
        return def.to_owned();
    };
    let mut out = def[..at].to_owned();
    // Keep NULL / NOT NULL and COMMENT after the expression.
    for tail in [" NOT NULL", " NULL"] {
        if upper[at..].contains(tail) {
            out.push_str(tail);
            break;
        }
    }
    out
}

/// A column option as the replica takes it over, or `None` for one it drops: keys and
/// constraints are the source's job, and a generated column is a plain one in the replica
/// (its values arrive in the row images; a replica that computes them refuses writes).
pub fn replica_option(option: &ColumnOption) -> Option<String> {
    match option {
        ColumnOption::PrimaryKey(_)
        | ColumnOption::Unique(_)
        | ColumnOption::ForeignKey(_)
        | ColumnOption::Check(_)
        | ColumnOption::Generated { .. } => None,
        // sqlparser unescapes backslashes when parsing and does not escape them when printing.
        ColumnOption::Default(Expr::Value(v)) => match &v.value {
            SqlValue::SingleQuotedString(text) => Some(format!("DEFAULT {}", quote_string(text))),
            _ => Some(option.to_string()),
        },
        other => Some(other.to_string()),
    }
}

/// `text` as a string literal for rowsync's sessions (`SESSION_SQL_MODE` keeps backslash escapes).
fn quote_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// A replica column's definition line: its quoted name, type and options.
pub fn column_definition(
    name: &str,
    data_type: &impl std::fmt::Display,
    options: &[String],
) -> String {
    let mut def = format!("{} {data_type}", quote_ident(name));
    for o in options {
        def.push(' ');
        def.push_str(o);
    }
    def
}
