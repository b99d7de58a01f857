//! The connection's side of the protocol: who may connect (`Startup`), and how simple and
//! extended queries are answered (`Queries`) — by the connection itself (`local`) or by the
//! service's SQL engine.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use arrow_pg::datatypes::df::deserialize_parameters;
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireConnectionState, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::response::{NoticeResponse, TransactionStatus};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::types::format::FormatOptions;

use super::catalog::PgCatalog;
use super::local::{Local, SERVER_VERSION, local, server_setting};
use crate::error::ApiError;
use crate::sql::SqlLimits;
use crate::state::AppState;

/// The handlers every connection shares.
pub struct Handlers {
    queries: Arc<Queries>,
    startup: Arc<Startup>,
}

impl Handlers {
    pub fn new(state: Arc<AppState>, catalog: Arc<PgCatalog>) -> Self {
        let startup = Arc::new(Startup::new(state.auth_token.clone()));
        Self { queries: Arc::new(Queries { state, parser: Arc::new(Parser::default()), catalog }), startup }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.queries)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.queries)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.startup)
    }
}

/// Who may connect: with an API token, a client whose password is the token (any user name);
/// without one, anyone, as the HTTP API is open then.
pub struct Startup {
    token: Option<String>,
    parameters: DefaultServerParameterProvider,
}

impl Startup {
    fn new(token: Option<String>) -> Self {
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = SERVER_VERSION.to_owned();
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = true;
        Self { token, parameters }
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if self.token.is_some() {
                    client.set_state(PgWireConnectionState::AuthenticationInProgress);
                    client.send(PgWireBackendMessage::Authentication(Authentication::CleartextPassword)).await?;
                } else {
                    finish_authentication(client, &self.parameters).await?;
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(password) => {
                let password = password.into_password()?;
                let Some(token) = &self.token else { return Ok(()) };
                if crate::http::same(password.password.as_bytes(), token.as_bytes()) {
                    finish_authentication(client, &self.parameters).await?;
                } else {
                    let user = client.metadata().get("user").cloned().unwrap_or_default();
                    return Err(PgWireError::InvalidPassword(user));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Answers statements: the connection's own (`local`), else the service's SQL engine on a fresh
/// session of the committed lake with PostgreSQL's catalog.
pub struct Queries {
    state: Arc<AppState>,
    parser: Arc<Parser>,
    catalog: Arc<PgCatalog>,
}

impl Queries {
    /// One statement's answer, in `format`, with `params` for its `$n`.
    async fn answer<C>(
        &self,
        client: &mut C,
        statement: &Statement,
        params: Option<ParamValues>,
        format: &Format,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let started = std::time::Instant::now();
        let answer = self.answer_unmeasured(client, statement, params, format).await;
        self.state.pg.answered(&answer, started.elapsed().as_secs_f64());
        answer
    }

    /// [`Queries::answer`], before it is counted.
    async fn answer_unmeasured<C>(
        &self,
        client: &mut C,
        statement: &Statement,
        params: Option<ParamValues>,
        format: &Format,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let local = local(statement);
        if client.transaction_status() == TransactionStatus::Error && !matches!(local, Some(Local::End(_))) {
            return Err(user_error(
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block".into(),
            ));
        }
        match local {
            Some(Local::Begin) => Ok(Response::TransactionStart(Tag::new("BEGIN"))),
            Some(Local::End(tag)) => Ok(Response::TransactionEnd(Tag::new(tag))),
            Some(Local::Done(tag)) => Ok(Response::Execution(Tag::new(tag))),
            Some(Local::Remember { name, value }) => {
                client.metadata_mut().insert(setting_key(&name), value);
                Ok(Response::Execution(Tag::new("SET")))
            }
            Some(Local::Show { name, column }) => {
                let batch = show(&Settings::of(client, &self.state.sql_limits), &name, &column)?;
                Ok(Response::Query(rows(client, batch, format)?))
            }
            None => {
                let limits = &self.state.sql_limits;
                let ctx = self.session(Settings::of(client, limits)).await.map_err(refused)?;
                let answer =
                    self.state.sql.run_with(&ctx, &statement.to_string(), params, limits).await.map_err(refused)?;
                if answer.truncated {
                    let notice = ErrorInfo::new(
                        "NOTICE".into(),
                        "01000".into(),
                        format!("the answer was cut off at {} rows (the service's --sql-max-rows)", limits.max_rows),
                    );
                    client.send(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(notice))).await?;
                }
                let response = rows(client, answer.batch.clone(), format)?;
                drop(answer);
                Ok(Response::Query(response))
            }
        }
    }

    /// The columns `statement` answers with, and its parameters' types, without running it.
    async fn describe<C: ClientInfo>(
        &self,
        client: &C,
        statement: &Statement,
    ) -> PgWireResult<(Vec<Option<DataType>>, Arc<Schema>)> {
        match local(statement) {
            Some(Local::Show { column, .. }) => Ok((vec![], show_schema(&column))),
            Some(_) => Ok((vec![], Arc::new(Schema::empty()))),
            None => {
                let limits = &self.state.sql_limits;
                let ctx = self.session(Settings::of(client, limits)).await.map_err(refused)?;
                let described = self.state.sql.describe(&ctx, &statement.to_string(), limits).await.map_err(refused)?;
                Ok((described.params, described.schema))
            }
        }
    }

    /// The HTTP endpoint's session, with PostgreSQL's catalog, dialect and `current_setting()`.
    async fn session(&self, settings: Settings) -> Result<SessionContext, ApiError> {
        let ctx = {
            let mut committed = self.state.committed.lock().await;
            crate::sql::session(&self.state.lake, &mut committed, &self.state.sql_limits).await?
        };
        let ctx = self.catalog.on(ctx)?;
        ctx.register_udf(settings.current_setting());
        ctx.state_ref().write().config_mut().options_mut().set("datafusion.sql_parser.dialect", "PostgreSQL")?;
        Ok(ctx)
    }
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = self.parser.statements(query)?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        // As PostgreSQL does: statements run in order, and the first error ends the query.
        let mut responses = Vec::with_capacity(statements.len());
        for statement in &statements {
            match self.answer(client, statement, None, &Format::UnifiedText).await {
                Ok(response) => responses.push(response),
                Err(PgWireError::UserError(info)) => {
                    responses.push(Response::Error(info));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = Statement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    async fn do_describe_statement<C>(
        &self,
        client: &mut C,
        target: &StoredStatement<Self::Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (params, schema) = self.describe(client, &target.statement).await?;
        // The client's declared types first; else the plan's; else "unknown" (sent as text).
        let declared = |i: usize| target.parameter_types.get(i).cloned().flatten();
        let count = params.len().max(target.parameter_types.len());
        let params = (0..count)
            .map(|i| {
                declared(i)
                    .or_else(|| params.get(i).cloned().flatten().and_then(|t| into_pg_type(&t).ok()))
                    .unwrap_or(Type::UNKNOWN)
            })
            .collect();
        let fields = fields(client, &schema, &Format::UnifiedText)?;
        Ok(DescribeStatementResponse::new(params, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        target: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (_, schema) = self.describe(client, &target.statement.statement).await?;
        Ok(DescribePortalResponse::new(fields(client, &schema, &target.result_column_format)?))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statement = &portal.statement.statement;
        let params = if portal.parameters.is_empty() {
            None
        } else {
            // Typed as the plan infers them where it does, else as the client declared them.
            let (types, _) = self.describe(client, statement).await?;
            let types: Vec<Option<&DataType>> =
                (0..portal.parameters.len()).map(|i| types.get(i).and_then(Option::as_ref)).collect();
            Some(deserialize_parameters(portal, &types)?)
        };
        self.answer(client, statement, params, &portal.result_column_format).await
    }
}

/// Splits a query into statements, rewriting PostgreSQL-only syntax into what DataFusion plans.
#[derive(Default)]
pub struct Parser(PostgresCompatibilityParser);

impl Parser {
    pub(super) fn statements(&self, sql: &str) -> PgWireResult<Vec<Statement>> {
        self.0.parse(sql).map_err(|e| user_error("42601", e.to_string()))
    }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Statement;

    async fn parse_sql<C>(&self, _client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<Option<Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut statements = self.statements(sql)?;
        match statements.len() {
            0 => Ok(None),
            1 => Ok(statements.pop()),
            _ => Err(user_error("42601", "cannot insert multiple commands into a prepared statement".into())),
        }
    }

    // Describing needs the lake (`Queries::describe`): these are never asked.
    fn get_parameter_types(&self, _statement: &Statement) -> PgWireResult<Vec<Type>> {
        Ok(vec![])
    }

    fn get_result_schema(&self, _statement: &Statement, _format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        Ok(vec![])
    }
}

/// Where a `SET` value is kept, among the connection's startup parameters.
const SET_PREFIX: &str = "testlake.set.";

fn setting_key(name: &str) -> String {
    format!("{SET_PREFIX}{name}")
}

/// `SHOW name`'s one-row answer.
fn show(settings: &Settings, name: &str, column: &str) -> PgWireResult<RecordBatch> {
    let value = settings.get(name).map_err(|e| user_error("42704", e))?;
    RecordBatch::try_new(show_schema(column), vec![Arc::new(StringArray::from(vec![value]))])
        .map_err(|e| PgWireError::ApiError(Box::new(e)))
}

/// A connection's settings when a statement starts: what it `SET`, its startup parameters
/// (`application_name`, `user`, …), else the server's ([`server_setting`]).
#[derive(Clone)]
struct Settings {
    own: HashMap<String, String>,
    statement_timeout_ms: u128,
}

impl Settings {
    fn of<C: ClientInfo>(client: &C, limits: &SqlLimits) -> Self {
        let mut own: HashMap<String, String> = client.metadata().clone();
        let set: Vec<(String, String)> =
            own.iter().filter_map(|(k, v)| Some((k.strip_prefix(SET_PREFIX)?.to_owned(), v.clone()))).collect();
        own.extend(set);
        Self { own, statement_timeout_ms: limits.timeout.as_millis() }
    }

    fn get(&self, name: &str) -> Result<String, String> {
        self.own
            .get(name)
            .cloned()
            .or_else(|| server_setting(name, self.statement_timeout_ms))
            .ok_or_else(|| format!("unrecognized configuration parameter \"{name}\""))
    }

    /// PostgreSQL's `current_setting(name)` over these settings (Grafana reads `search_path`).
    fn current_setting(self) -> ScalarUDF {
        let lookup = move |args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
            let names = ColumnarValue::values_to_arrays(args)?;
            let names = cast(&names[0], &DataType::Utf8)?;
            let values = names
                .as_string::<i32>()
                .iter()
                .map(|name| name.map(|n| self.get(&n.to_lowercase())).transpose())
                .collect::<Result<StringArray, String>>()
                .map_err(DataFusionError::Execution)?;
            Ok(ColumnarValue::Array(Arc::new(values)))
        };
        create_udf("current_setting", vec![DataType::Utf8], DataType::Utf8, Volatility::Stable, Arc::new(lookup))
    }
}

fn show_schema(column: &str) -> Arc<Schema> {
    Arc::new(Schema::new(vec![Field::new(column, DataType::Utf8, false)]))
}

fn fields<C: ClientInfo>(client: &C, schema: &Schema, format: &Format) -> PgWireResult<Vec<FieldInfo>> {
    let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
    arrow_schema_to_pg_fields(schema, format, Some(options))
}

/// An answer as PostgreSQL rows, encoded before they are sent: the statement's slot (held by
/// the answer) is given back once they are, however slowly the client reads them.
fn rows<C: ClientInfo>(client: &C, batch: RecordBatch, format: &Format) -> PgWireResult<QueryResponse> {
    let fields = Arc::new(fields(client, batch.schema_ref(), format)?);
    let encoded: Vec<_> = encode_recordbatch(Arc::clone(&fields), batch).collect();
    Ok(QueryResponse::new(fields, futures::stream::iter(encoded)))
}

/// A statement's failure as PostgreSQL reports it: an `ERROR` with the SQLSTATE a client can act
/// on (a client retries 53000 and 57014, and fixes its SQL on 42xxx).
fn refused(e: ApiError) -> PgWireError {
    user_error(sqlstate(&e), e.to_string())
}

pub(super) fn sqlstate(e: &ApiError) -> &'static str {
    match e {
        ApiError::StatementRefused(e) => planning_sqlstate(e),
        ApiError::StatementTooComplex(_) => "54001",
        ApiError::StatementOverMemory(_) => "53200",
        ApiError::StatementTimeout(_) => "57014",
        ApiError::SqlBusy(_) => "53000",
        ApiError::Shared(e) => sqlstate(e),
        ApiError::DataFusion(e) => match e.find_root() {
            DataFusionError::ResourcesExhausted(_) => "53200",
            e => planning_sqlstate(e),
        },
        _ => "XX000",
    }
}

/// PostgreSQL's codes for what planning refuses: bad syntax, unknown names, what a read-only
/// session may not do.
fn planning_sqlstate(e: &DataFusionError) -> &'static str {
    let message = e.to_string();
    match e.find_root() {
        DataFusionError::SQL(..) => "42601",
        _ if message.contains("not supported") && ["DDL", "DML", "Statement"].iter().any(|k| message.contains(k)) => {
            "25006"
        }
        DataFusionError::Plan(m) if m.contains("table") && m.contains("not found") => "42P01",
        DataFusionError::SchemaError(..) => "42703",
        DataFusionError::Plan(_) => "42000",
        _ => "XX000",
    }
}

fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message)))
}
