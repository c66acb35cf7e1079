//! Classifies the SQL text of binlog QUERY events: transaction control, XA, DDL on a table,
//! or a DML statement logged in STATEMENT format.
//!
//! Only the leading keywords and table names are read — enough to know which tables a DDL
//! touches and where it stands in the stream. Statements we do not recognise are `Other`.

use crate::model::event::CreateMode;
use crate::model::name::TableName;

/// What a QUERY event does, as far as replication is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    Begin,
    Commit,
    Rollback,
    XaStart,
    XaEnd,
    XaPrepare,
    XaCommit {
        one_phase: bool,
    },
    XaRollback,
    Truncate(TableName),
    /// ALTER TABLE with its raw text.
    Alter(TableName),
    Create(TableName, CreateMode),
    Drop(Vec<TableName>),
    Rename(Vec<(TableName, TableName)>),
    /// INSERT/UPDATE/DELETE/REPLACE logged as a statement.
    Dml(Option<TableName>),
    Other,
}

impl Statement {
    /// The statement with its table names lower-cased, as a server with
    /// `lower_case_table_names` set stores (and logs in TABLE_MAP events) them.
    pub fn lowercase_names(self) -> Statement {
        let low = |t: TableName| TableName::new(t.db.to_lowercase(), t.table.to_lowercase());
        match self {
            Statement::Truncate(t) => Statement::Truncate(low(t)),
            Statement::Alter(t) => Statement::Alter(low(t)),
            Statement::Create(t, mode) => Statement::Create(low(t), mode),
            Statement::Drop(ts) => Statement::Drop(ts.into_iter().map(low).collect()),
            Statement::Rename(pairs) => {
                Statement::Rename(pairs.into_iter().map(|(a, b)| (low(a), low(b))).collect())
            }
            Statement::Dml(t) => Statement::Dml(t.map(low)),
            other => other,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Ident(String),
    Punct(char),
}

fn tokenize(sql: &str, limit: usize) -> Vec<Token> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() && out.len() < limit {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && chars.get(i + 1) == Some(&'-') || c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            // `/*!50100 ... */` executable comments keep their content for the server; we
            // keep it too by only skipping the markers.
            if chars.get(i + 2) == Some(&'!') {
                i += 3;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
                continue;
            }
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '*' && chars.get(i + 1) == Some(&'/') {
            i += 2;
        } else if c == '`' {
            let mut s = String::new();
            i += 1;
            while i < chars.len() {
                if chars[i] == '`' {
                    if chars.get(i + 1) == Some(&'`') {
                        s.push('`');
                        i += 2;
                        continue;
                    }
                    break;
                }
                s.push(chars[i]);
                i += 1;
            }
            i += 1;
            out.push(Token::Ident(s));
        } else if c.is_alphanumeric() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                i += 1;
            }
            out.push(Token::Word(chars[start..i].iter().collect()));
        } else if c == '\'' || c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push(Token::Punct('\''));
        } else {
            out.push(Token::Punct(c));
            i += 1;
        }
    }
    out
}

struct Cursor<'a> {
    tokens: &'a [Token],
    at: usize,
    default_db: &'a str,
}

impl Cursor<'_> {
    fn peek_kw(&self, kw: &str) -> bool {
        matches!(self.tokens.get(self.at), Some(Token::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        let hit = self.peek_kw(kw);
        if hit {
            self.at += 1;
        }
        hit
    }

    fn eat_kws(&mut self, kws: &[&str]) -> bool {
        let save = self.at;
        if kws.iter().all(|k| self.eat_kw(k)) {
            true
        } else {
            self.at = save;
            false
        }
    }

    fn eat_punct(&mut self, p: char) -> bool {
        let hit = self.tokens.get(self.at) == Some(&Token::Punct(p));
        if hit {
            self.at += 1;
        }
        hit
    }

    fn name_part(&mut self) -> Option<String> {
        let t = match self.tokens.get(self.at)? {
            Token::Word(w) | Token::Ident(w) => w.clone(),
            Token::Punct(_) => return None,
        };
        self.at += 1;
        Some(t)
    }

    fn table(&mut self) -> Option<TableName> {
        let first = self.name_part()?;
        if self.eat_punct('.') {
            let second = self.name_part()?;
            Some(TableName::new(first, second))
        } else {
            Some(TableName::new(self.default_db, first))
        }
    }
}

/// Classifies `sql`, run with default database `default_db`.
pub fn classify(default_db: &str, sql: &str) -> Statement {
    let tokens = tokenize(sql, 64);
    let mut c = Cursor {
        tokens: &tokens,
        at: 0,
        default_db,
    };
    if c.eat_kw("BEGIN") || c.eat_kws(&["START", "TRANSACTION"]) {
        return Statement::Begin;
    }
    if c.eat_kw("COMMIT") {
        return Statement::Commit;
    }
    if c.eat_kw("ROLLBACK") {
        return if c.peek_kw("TO") {
            Statement::Other
        } else {
            Statement::Rollback
        };
    }
    if c.eat_kw("XA") {
        return if c.eat_kw("START") || c.eat_kw("BEGIN") {
            Statement::XaStart
        } else if c.eat_kw("END") {
            Statement::XaEnd
        } else if c.eat_kw("PREPARE") {
            Statement::XaPrepare
        } else if c.eat_kw("COMMIT") {
            Statement::XaCommit {
                one_phase: tokens
                    .iter()
                    .any(|t| matches!(t, Token::Word(w) if w.eq_ignore_ascii_case("PHASE"))),
            }
        } else if c.eat_kw("ROLLBACK") {
            Statement::XaRollback
        } else {
            Statement::Other
        };
    }
    if c.eat_kw("TRUNCATE") {
        c.eat_kw("TABLE");
        return c
            .table()
            .map(Statement::Truncate)
            .unwrap_or(Statement::Other);
    }
    if c.eat_kw("ALTER") {
        c.eat_kw("ONLINE");
        c.eat_kw("IGNORE");
        if c.eat_kw("TABLE") {
            c.eat_kws(&["IF", "EXISTS"]);
            return c.table().map(Statement::Alter).unwrap_or(Statement::Other);
        }
        return Statement::Other;
    }
    if c.eat_kw("CREATE") {
        let replace = c.eat_kws(&["OR", "REPLACE"]);
        if c.eat_kw("TEMPORARY") {
            return Statement::Other;
        }
        if c.eat_kw("TABLE") {
            let mode = match (replace, c.eat_kws(&["IF", "NOT", "EXISTS"])) {
                (true, _) => CreateMode::Replace,
                (false, true) => CreateMode::IfNotExists,
                (false, false) => CreateMode::New,
            };
            return c
                .table()
                .map(|t| Statement::Create(t, mode))
                .unwrap_or(Statement::Other);
        }
        return Statement::Other;
    }
    if c.eat_kw("DROP") {
        if c.eat_kw("TEMPORARY") {
            return Statement::Other;
        }
        if c.eat_kw("TABLE") {
            c.eat_kws(&["IF", "EXISTS"]);
            let mut tables = Vec::new();
            while let Some(t) = c.table() {
                tables.push(t);
                if !c.eat_punct(',') {
                    break;
                }
            }
            return Statement::Drop(tables);
        }
        return Statement::Other;
    }
    if c.eat_kw("RENAME") && c.eat_kw("TABLE") {
        let mut pairs = Vec::new();
        while let Some(from) = c.table() {
            if !c.eat_kw("TO") {
                break;
            }
            let Some(to) = c.table() else { break };
            pairs.push((from, to));
            if !c.eat_punct(',') {
                break;
            }
        }
        return Statement::Rename(pairs);
    }
    for (kw, next) in [
        ("INSERT", "INTO"),
        ("REPLACE", "INTO"),
        ("UPDATE", ""),
        ("DELETE", "FROM"),
    ] {
        if c.eat_kw(kw) {
            for modifier in [
                "LOW_PRIORITY",
                "DELAYED",
                "HIGH_PRIORITY",
                "QUICK",
                "IGNORE",
            ] {
                c.eat_kw(modifier);
            }
            if !next.is_empty() {
                c.eat_kw(next);
            }
            return Statement::Dml(c.table());
        }
    }
    Statement::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(db: &str, table: &str) -> TableName {
        TableName::new(db, table)
    }

    #[test]
    fn transaction_control() {
        assert_eq!(classify("d", "BEGIN"), Statement::Begin);
        assert_eq!(classify("d", "COMMIT"), Statement::Commit);
        assert_eq!(classify("d", "ROLLBACK"), Statement::Rollback);
        assert_eq!(classify("d", "XA PREPARE 'x'"), Statement::XaPrepare);
        assert_eq!(classify("d", "XA ROLLBACK 'x'"), Statement::XaRollback);
        assert_eq!(
            classify("d", "XA COMMIT 'x' ONE PHASE"),
            Statement::XaCommit { one_phase: true }
        );
    }

    #[test]
    fn ddl_names_its_tables() {
        assert_eq!(
            classify("product", "TRUNCATE TABLE `product`"),
            Statement::Truncate(t("product", "product"))
        );
        assert_eq!(
            classify("x", "/* c */ ALTER TABLE product.`p``q` ADD COLUMN z INT"),
            Statement::Alter(t("product", "p`q"))
        );
        assert_eq!(
            classify(
                "db",
                "DROP TABLE IF EXISTS a, other.b /* generated by server */"
            ),
            Statement::Drop(vec![t("db", "a"), t("other", "b")])
        );
        assert_eq!(
            classify("db", "RENAME TABLE a TO _a_old, _a_new TO a"),
            Statement::Rename(vec![
                (t("db", "a"), t("db", "_a_old")),
                (t("db", "_a_new"), t("db", "a"))
            ])
        );
        assert_eq!(
            classify("db", "CREATE TABLE IF NOT EXISTS n (id int primary key)"),
            Statement::Create(t("db", "n"), CreateMode::IfNotExists)
        );
        // How a CREATE treats an existing table, read through comments as the server reads
        // them (the text of executable `/*!NNNNN … */` comments counts).
        for (sql, mode) in [
            ("CREATE TABLE n (id INT)", CreateMode::New),
            ("create  or replace table n(id int)", CreateMode::Replace),
            (
                "CREATE TABLE IF NOT EXISTS `n` LIKE u",
                CreateMode::IfNotExists,
            ),
            (
                "CREATE TABLE /*!32312 IF NOT EXISTS*/ n (id INT)",
                CreateMode::IfNotExists,
            ),
            (
                "/* app boot */ CREATE TABLE IF NOT EXISTS n (id INT)",
                CreateMode::IfNotExists,
            ),
            (
                "CREATE /* if not exists */ TABLE n (c VARCHAR(9) DEFAULT 'IF NOT EXISTS')",
                CreateMode::New,
            ),
            (
                "-- replace it\nCREATE OR REPLACE TABLE n (id INT)",
                CreateMode::Replace,
            ),
        ] {
            assert_eq!(
                classify("db", sql),
                Statement::Create(t("db", "n"), mode),
                "{sql}"
            );
        }
        assert_eq!(
            classify("db", "CREATE TEMPORARY TABLE n (id int)"),
            Statement::Other
        );
    }

    #[test]
    fn statement_dml_is_recognised() {
        assert_eq!(
            classify("db", "insert ignore into p values (1)"),
            Statement::Dml(Some(t("db", "p")))
        );
        assert_eq!(
            classify("db", "UPDATE LOW_PRIORITY `s`.`p` SET a=1"),
            Statement::Dml(Some(t("s", "p")))
        );
    }
}
