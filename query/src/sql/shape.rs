//! How big and how deep a statement may be, checked on its parsed form before it is planned.
//!
//! DataFusion plans and optimizes recursively (its `recursive_protection` feature is off here), so
//! a flat `SELECT 1+1+…+1` of 1,000 terms — parsed without recursion into a tree 1,000 levels deep —
//! overflowed a thread's stack and aborted the process. Planning also grows faster than linearly
//! with the tables joined (in a debug build, 60 joined tables took 2.3 s of planning that nothing
//! interrupts, 100 took 14 s). So a
//! statement is refused when its text is longer than [`MAX_STATEMENT_BYTES`], its expressions and
//! subqueries nest deeper than [`MAX_DEPTH`], or it names more than [`MAX_RELATIONS`] tables and
//! `SELECT`s. Under these limits a statement plans within the statement threads' stack
//! (`engine::STACK_BYTES`: a 256-deep expression needs about 6 MiB in a debug build).

use std::ops::ControlFlow;

use datafusion::sql::parser::{CopyToSource, Statement};
use datafusion::sql::sqlparser::ast::{Expr, Query, Select, TableFactor, Visit, Visitor};

/// The longest statement accepted, in bytes.
pub const MAX_STATEMENT_BYTES: usize = 256 << 10;
/// How deep expressions and subqueries may nest (a chain `a OR b OR …` is as deep as it is long:
/// `a IN (…)` is flat).
pub const MAX_DEPTH: usize = 256;
/// How many tables and `SELECT`s one statement may name (joins, unions).
pub const MAX_RELATIONS: usize = 64;

/// The statement's text is too long to parse.
pub fn check_length(sql: &str) -> Result<(), String> {
    if sql.len() > MAX_STATEMENT_BYTES {
        return Err(format!("the statement is {} bytes long; at most {MAX_STATEMENT_BYTES} are accepted", sql.len()));
    }
    Ok(())
}

/// The parsed statement nests too deep or names too many relations to plan safely.
pub fn check(statement: &Statement) -> Result<(), String> {
    let mut shape = Shape::default();
    let flow = match statement {
        Statement::Statement(s) => s.visit(&mut shape),
        Statement::Explain(explain) => return check(&explain.statement),
        Statement::CopyTo(copy) => match &copy.source {
            CopyToSource::Query(query) => query.visit(&mut shape),
            CopyToSource::Relation(_) => ControlFlow::Continue(()),
        },
        Statement::CreateExternalTable(create) => match create.columns.visit(&mut shape) {
            ControlFlow::Continue(()) => create.order_exprs.visit(&mut shape),
            stop => stop,
        },
        Statement::Reset(_) => ControlFlow::Continue(()),
    };
    match flow {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(why) => Err(why),
    }
}

/// The walk's state: the current nesting and the relations seen. It stops at the first limit
/// passed, so it never descends deeper than [`MAX_DEPTH`] itself.
#[derive(Default)]
struct Shape {
    depth: usize,
    relations: usize,
}

impl Shape {
    fn enter(&mut self) -> ControlFlow<String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return ControlFlow::Break(format!(
                "the statement nests expressions or subqueries deeper than {MAX_DEPTH} levels \
                 (a long chain like a OR b OR … counts each link: use IN (…) instead)"
            ));
        }
        ControlFlow::Continue(())
    }

    fn leave(&mut self) -> ControlFlow<String> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn relation(&mut self) -> ControlFlow<String> {
        self.relations += 1;
        if self.relations > MAX_RELATIONS {
            return ControlFlow::Break(format!("the statement names more than {MAX_RELATIONS} tables and SELECTs"));
        }
        ControlFlow::Continue(())
    }
}

impl Visitor for Shape {
    type Break = String;

    fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<String> {
        self.enter()
    }

    fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<String> {
        self.leave()
    }

    fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<String> {
        self.enter()
    }

    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<String> {
        self.leave()
    }

    fn pre_visit_select(&mut self, _: &Select) -> ControlFlow<String> {
        self.relation()
    }

    fn pre_visit_table_factor(&mut self, _: &TableFactor) -> ControlFlow<String> {
        self.relation()
    }
}
