//! PostgreSQL's catalog on a statement's session, set up once per listener.
//!
//! `datafusion-pg-catalog`'s `setup_pg_catalog` parses its bundled `pg_catalog` tables (Feather
//! files) every time it runs, and each statement runs on a fresh session — twice per statement
//! with the extended protocol (Describe, then Execute). So it runs once, on a template session,
//! when the listener starts; each statement's session then takes the template's functions,
//! table functions and type planner (what the setup added: `current_schema()`,
//! `has_table_privilege()`, `pg_get_keywords()`, `regclass` as a type, …) and a `pg_catalog`
//! schema over its own tables, sharing the parsed tables.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::TableFunction;
use datafusion::error::DataFusionError;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::ScalarUDF;
use datafusion::logical_expr::planner::TypePlanner;
use datafusion::prelude::SessionContext;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::{PgCatalogSchemaProvider, PgCatalogStaticTables, setup_pg_catalog};

/// The catalog every statement's session gets: what `setup_pg_catalog` made of a template.
pub struct PgCatalog {
    tables: Arc<PgCatalogStaticTables>,
    functions: Vec<Arc<ScalarUDF>>,
    table_functions: HashMap<String, Arc<TableFunction>>,
    type_planner: Option<Arc<dyn TypePlanner>>,
}

/// The catalog the service's sessions use (DataFusion's default).
const CATALOG: &str = "datafusion";

impl PgCatalog {
    /// Sets the catalog up on a template session (parsing the bundled tables, once).
    pub fn new() -> Result<Self, DataFusionError> {
        let template = SessionContext::new();
        setup_pg_catalog(&template, CATALOG, EmptyContextProvider).map_err(|e| *e)?;
        let state = template.state();
        let mut builder = SessionStateBuilder::new_from_existing(state.clone());
        Ok(Self {
            tables: Arc::new(PgCatalogStaticTables::try_new()?),
            functions: state.scalar_functions().values().cloned().collect(),
            table_functions: state.table_functions().clone(),
            type_planner: builder.type_planner().clone(),
        })
    }

    /// `ctx` with the catalog: the template's functions in place of its own (the same defaults,
    /// plus PostgreSQL's), and `pg_catalog` listing `ctx`'s tables.
    pub fn on(&self, ctx: SessionContext) -> Result<SessionContext, DataFusionError> {
        let mut builder = SessionStateBuilder::new_from_existing(ctx.state())
            .with_scalar_functions(self.functions.clone())
            .with_table_functions(self.table_functions.clone());
        if let Some(planner) = &self.type_planner {
            builder = builder.with_type_planner(Arc::clone(planner));
        }
        let ctx = SessionContext::new_with_state(builder.build());
        let pg_catalog = PgCatalogSchemaProvider::try_new(
            ctx.state().catalog_list().clone(),
            Arc::clone(&self.tables),
            EmptyContextProvider,
        )?;
        let catalog = ctx
            .catalog(CATALOG)
            .ok_or_else(|| DataFusionError::Configuration(format!("the session has no catalog {CATALOG}")))?;
        catalog.register_schema("pg_catalog", Arc::new(pg_catalog))?;
        Ok(ctx)
    }
}
