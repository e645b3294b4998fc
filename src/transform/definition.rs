//! A transform file: `CREATE STREAM <name> [WITH (dlq = '…', key = '…')] AS SELECT … FROM <raw
//! stream> [WHERE …];`, read and checked without any database.
//!
//! The header is the ksqlDB idiom and is parsed here; the `SELECT` is parsed by DataFusion's SQL
//! parser (sqlparser). The header is blanked out (newlines kept) before the `SELECT` is parsed,
//! so every position the parser or these checks report is the position in the file.
//!
//! What can be refused without knowing the raw stream's columns is refused here: joins,
//! subqueries, aggregates, windows, DISTINCT, ORDER BY / LIMIT, set operations, CTEs. Unknown
//! columns and type errors need the stream's schema and are found by the planner (`plan.rs`),
//! which `sluice check` runs against the live source tables.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use datafusion::sql::sqlparser::ast::{
    Expr, GroupByExpr, ObjectName, SetExpr, Spanned, Statement, TableFactor, visit_expressions,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::config::ConfigProblem;

/// One cleansed stream, as its file declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct TransformDef {
    /// The cleansed stream's name, e.g. `clean.orders`.
    pub name: String,
    /// The raw stream it reads, e.g. `shop.public.orders`.
    pub(crate) from: String,
    /// Where rows that cannot be transformed go (default `dlq.<name>`).
    pub(crate) dlq: String,
    /// Output columns that form the key, when not the projected primary key.
    pub(crate) key: Option<Vec<String>>,
    /// The file's text with the header blanked: a `SELECT` whose positions are the file's.
    pub(crate) select_sql: String,
    pub(crate) file: PathBuf,
    /// Line of the `SELECT` keyword.
    pub(crate) select_line: usize,
}

/// Read and check one transform file.
pub fn parse_file(path: &Path) -> Result<TransformDef, ConfigProblem> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigProblem {
        file: path.to_path_buf(),
        line: None,
        column: None,
        message: format!("cannot read: {e}"),
    })?;
    parse(path, &text)
}

/// Parse a transform from its text (`path` only names it in errors).
pub fn parse(path: &Path, text: &str) -> Result<TransformDef, ConfigProblem> {
    let at = |line: u64, message: String| ConfigProblem {
        file: path.to_path_buf(),
        line: (line > 0).then_some(line as usize),
        column: None,
        message,
    };
    let tokens = Tokenizer::new(&GenericDialect {}, text)
        .tokenize_with_location()
        .map_err(|e| at(e.location.line, e.message.clone()))?;
    let mut header = Header::new(tokens);
    let (name, options, select_at) = header.parse().map_err(|(line, msg)| at(line, msg))?;
    let select_sql = blank_before(text, select_at.0, select_at.1);
    let mut dlq = format!("dlq.{name}");
    let mut key = None;
    for (option, value, line) in options {
        match option.as_str() {
            "dlq" => dlq = value,
            "key" => {
                key = Some(
                    value
                        .split(',')
                        .map(|c| c.trim().to_string())
                        .filter(|c| !c.is_empty())
                        .collect(),
                )
            }
            other => {
                return Err(at(
                    line,
                    format!("unknown option `{other}`: the options are dlq and key"),
                ));
            }
        }
    }
    if dlq == name {
        return Err(at(
            select_at.0,
            format!("the dead-letter stream must differ from the stream itself (`{name}`)"),
        ));
    }
    let statements = Parser::new(&GenericDialect {})
        .try_with_sql(&select_sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| at(select_at.0, format!("SQL: {e}")))?;
    let from = match statements.as_slice() {
        [statement] => check_select(statement).map_err(|(line, msg)| at(line, msg))?,
        [] => return Err(at(select_at.0, "expected a SELECT after AS".into())),
        [_, second, ..] => {
            return Err(at(
                second.span().start.line,
                "one statement per file: a transform file holds one CREATE STREAM … AS SELECT"
                    .into(),
            ));
        }
    };
    Ok(TransformDef {
        name,
        from,
        dlq,
        key,
        select_sql,
        file: path.to_path_buf(),
        select_line: select_at.0 as usize,
    })
}

/// Replace everything before (line, column) with spaces, keeping newlines.
fn blank_before(text: &str, line: u64, column: u64) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut l, mut c) = (1u64, 1u64);
    for ch in text.chars() {
        let before = l < line || (l == line && c < column);
        if ch == '\n' {
            out.push('\n');
            l += 1;
            c = 1;
            continue;
        }
        out.push(if before { ' ' } else { ch });
        c += 1;
    }
    out
}

type HeaderError = (u64, String);
type HeaderOptions = Vec<(String, String, u64)>;

/// The tokens of `CREATE STREAM name [WITH (k = 'v', …)] AS`, comments and spaces skipped.
struct Header {
    tokens: Vec<TokenWithSpan>,
    at: usize,
}

impl Header {
    fn new(tokens: Vec<TokenWithSpan>) -> Self {
        let tokens = tokens
            .into_iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .collect();
        Header { tokens, at: 0 }
    }

    fn parse(&mut self) -> Result<(String, HeaderOptions, (u64, u64)), HeaderError> {
        self.keyword("CREATE")?;
        self.keyword("STREAM")?;
        let name = self.dotted_name()?;
        let mut options = Vec::new();
        if self.peek_keyword("WITH") {
            self.at += 1;
            self.expect(&Token::LParen, "(")?;
            loop {
                let line = self.line();
                let option = self.word()?.to_ascii_lowercase();
                self.expect(&Token::Eq, "=")?;
                let value = match self.next() {
                    Some(Token::SingleQuotedString(s)) => s,
                    _ => {
                        return Err((
                            line,
                            format!("option `{option}`: give the value in single quotes"),
                        ));
                    }
                };
                options.push((option, value, line));
                match self.next() {
                    Some(Token::Comma) => continue,
                    Some(Token::RParen) => break,
                    _ => return Err((self.line(), "expected `,` or `)` in WITH (…)".into())),
                }
            }
        }
        self.keyword("AS")?;
        let select = self
            .tokens
            .get(self.at)
            .ok_or((self.line(), "expected a SELECT after AS".to_string()))?;
        Ok((
            name,
            options,
            (select.span.start.line, select.span.start.column),
        ))
    }

    fn line(&self) -> u64 {
        self.tokens
            .get(self.at)
            .or(self.tokens.last())
            .map_or(1, |t| t.span.start.line)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).map(|t| t.token.clone());
        self.at += 1;
        t
    }

    fn peek_keyword(&self, kw: &str) -> bool {
        matches!(self.tokens.get(self.at).map(|t| &t.token), Some(Token::Word(w)) if w.value.eq_ignore_ascii_case(kw))
    }

    fn keyword(&mut self, kw: &str) -> Result<(), HeaderError> {
        if self.peek_keyword(kw) {
            self.at += 1;
            return Ok(());
        }
        Err((
            self.line(),
            format!(
                "expected {kw}: a transform file is `CREATE STREAM <name> [WITH (dlq = '…', key = '…')] AS SELECT … FROM <raw stream> [WHERE …];`"
            ),
        ))
    }

    fn expect(&mut self, token: &Token, shown: &str) -> Result<(), HeaderError> {
        let line = self.line();
        match self.next() {
            Some(t) if &t == token => Ok(()),
            _ => Err((line, format!("expected `{shown}`"))),
        }
    }

    fn word(&mut self) -> Result<String, HeaderError> {
        let line = self.line();
        match self.next() {
            Some(Token::Word(w)) => Ok(w.value),
            _ => Err((line, "expected a name".into())),
        }
    }

    /// `a.b.c`, each part a word (quoted words keep their case).
    fn dotted_name(&mut self) -> Result<String, HeaderError> {
        let mut parts = vec![self.word()?];
        while matches!(
            self.tokens.get(self.at).map(|t| &t.token),
            Some(Token::Period)
        ) {
            self.at += 1;
            parts.push(self.word()?);
        }
        Ok(parts.join("."))
    }
}

/// The checks that need no schema; returns the raw stream the SELECT reads.
fn check_select(statement: &Statement) -> Result<String, HeaderError> {
    let refuse = |node: &dyn Spanned, what: &str| -> HeaderError {
        (
            node.span().start.line,
            format!(
                "{what} is not allowed: a transform is a stateless SELECT … FROM <one raw stream> [WHERE …] (row by row, no joins, aggregates or windows)"
            ),
        )
    };
    let Statement::Query(query) = statement else {
        return Err(refuse(statement, "a statement other than SELECT"));
    };
    if let Some(with) = &query.with {
        return Err(refuse(with, "WITH (a common table expression)"));
    }
    if let Some(order) = &query.order_by {
        return Err(refuse(order, "ORDER BY"));
    }
    if let Some(limit) = &query.limit_clause {
        return Err(refuse(limit, "LIMIT"));
    }
    let select = match query.body.as_ref() {
        SetExpr::Select(select) => select,
        SetExpr::SetOperation { .. } => {
            return Err(refuse(query.body.as_ref(), "UNION / INTERSECT / EXCEPT"));
        }
        other => return Err(refuse(other, "this query form")),
    };
    if select.distinct.is_some() {
        return Err(refuse(query.body.as_ref(), "DISTINCT"));
    }
    let grouped = match &select.group_by {
        GroupByExpr::All(_) => true,
        GroupByExpr::Expressions(exprs, _) => !exprs.is_empty(),
    };
    if grouped {
        return Err(refuse(&select.group_by, "GROUP BY"));
    }
    if let Some(having) = &select.having {
        return Err(refuse(having, "HAVING"));
    }
    if let Some(window) = select.named_window.first() {
        return Err(refuse(window, "WINDOW"));
    }
    let table = match select.from.as_slice() {
        [one] => {
            if let Some(join) = one.joins.first() {
                return Err(refuse(join, "a JOIN"));
            }
            match &one.relation {
                TableFactor::Table { name, .. } => name,
                other => return Err(refuse(other, "FROM with anything but a raw stream name")),
            }
        }
        [] => {
            return Err((
                statement.span().start.line,
                "FROM <raw stream> is missing".into(),
            ));
        }
        [_, second, ..] => return Err(refuse(second, "a second FROM item (a join)")),
    };
    let mut problem = None;
    let _ = visit_expressions(statement, |expr: &Expr| {
        let found = match expr {
            Expr::Function(f) if f.over.is_some() => Some(refuse(expr, "a window function (OVER)")),
            Expr::Function(f) if is_aggregate(&f.name) => {
                Some(refuse(expr, &format!("the aggregate function {}", f.name)))
            }
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
                Some(refuse(expr, "a subquery"))
            }
            _ => None,
        };
        match found {
            Some(p) => {
                problem = Some(p);
                ControlFlow::Break(())
            }
            None => ControlFlow::Continue(()),
        }
    });
    if let Some(p) = problem {
        return Err(p);
    }
    Ok(object_name(table))
}

/// The name as written, parts joined with `.`; unquoted parts are lower-cased as the SQL
/// planner does.
fn object_name(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|part| match part.as_ident() {
            Some(ident) if ident.quote_style.is_some() => ident.value.clone(),
            Some(ident) => ident.value.to_lowercase(),
            None => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Aggregate functions DataFusion knows, by name (refused before any schema is known).
fn is_aggregate(name: &ObjectName) -> bool {
    use std::sync::OnceLock;
    static NAMES: OnceLock<std::collections::HashSet<String>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        datafusion::functions_aggregate::all_default_aggregate_functions()
            .iter()
            .flat_map(|f| std::iter::once(f.name().to_string()).chain(f.aliases().iter().cloned()))
            .collect()
    });
    names.contains(&name.to_string().to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<TransformDef, ConfigProblem> {
        parse(Path::new("transforms/t.sql"), text)
    }

    #[test]
    fn reads_header_options_and_stream() {
        let t = parse_text(
            "-- cleansed orders\nCREATE STREAM clean.orders WITH (dlq = 'dlq.bad_orders', key = 'id, region') AS\nSELECT id, lower(email) AS email\nFROM shop.public.orders\nWHERE status <> 'test';\n",
        )
        .unwrap();
        assert_eq!(t.name, "clean.orders");
        assert_eq!(t.from, "shop.public.orders");
        assert_eq!(t.dlq, "dlq.bad_orders");
        assert_eq!(t.key, Some(vec!["id".to_string(), "region".to_string()]));
        assert_eq!(t.select_line, 3);
        // The header is blanked, lines kept: positions in the SELECT are the file's.
        assert_eq!(
            t.select_sql.lines().nth(2),
            Some("SELECT id, lower(email) AS email")
        );
        assert!(t.select_sql.lines().take(2).all(|l| l.trim().is_empty()));
    }

    #[test]
    fn default_dead_letter_stream() {
        let t = parse_text("CREATE STREAM c.o AS SELECT a FROM s.p.o").unwrap();
        assert_eq!(t.dlq, "dlq.c.o");
        assert_eq!(t.key, None);
    }

    fn refused(text: &str) -> ConfigProblem {
        parse_text(text).expect_err("must be refused")
    }

    #[test]
    fn refuses_what_a_stateless_transform_cannot_be() {
        let cases = [
            (
                "CREATE STREAM c AS\nSELECT a.id FROM s.p.a\nJOIN s.p.b ON a.id = b.id",
                3,
                "JOIN",
            ),
            (
                "CREATE STREAM c AS\nSELECT count(*) FROM s.p.a",
                2,
                "aggregate",
            ),
            (
                "CREATE STREAM c AS\nSELECT id FROM s.p.a\nGROUP BY id",
                3,
                "GROUP BY",
            ),
            (
                "CREATE STREAM c AS\nSELECT id,\n row_number() OVER (ORDER BY id) FROM s.p.a",
                3,
                "window",
            ),
            (
                "CREATE STREAM c AS\nSELECT DISTINCT id FROM s.p.a",
                2,
                "DISTINCT",
            ),
            (
                "CREATE STREAM c AS\nSELECT id FROM s.p.a ORDER BY id",
                2,
                "ORDER BY",
            ),
            (
                "CREATE STREAM c AS\nSELECT id FROM s.p.a\nWHERE id IN (SELECT id FROM s.p.b)",
                3,
                "subquery",
            ),
            ("CREATE STREAM c AS\nSELECT id FROM s.p.a, s.p.b", 2, "join"),
            (
                "CREATE STREAM c WITH (color = 'red') AS SELECT id FROM s.p.a",
                1,
                "unknown option",
            ),
            ("CREATE TABLE c AS SELECT 1", 1, "expected STREAM"),
            ("CREATE STREAM c AS\n\nSELEKT id FROM s.p.a", 3, "SQL"),
        ];
        for (text, line, words) in cases {
            let p = refused(text);
            assert_eq!(p.line, Some(line), "{text}: {p}");
            assert!(p.message.contains(words), "{text}: {p}");
        }
    }
}
