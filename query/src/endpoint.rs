//! What declares an endpoint: one [`Endpoint`] per route, written next to its handler (each file
//! under `handlers/` has a `pub const` for each of its routes) and listed once in
//! `routes::ENDPOINTS`, from which the router and the OpenAPI document are both built.

use std::sync::Arc;

use axum::routing::{MethodFilter, MethodRouter};

use crate::state::AppState;

/// The HTTP method of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    /// As OpenAPI writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Post => "post",
        }
    }

    pub fn filter(self) -> MethodFilter {
        match self {
            Self::Get => MethodFilter::GET,
            Self::Post => MethodFilter::POST,
        }
    }
}

/// One route: what OpenAPI says of it, how it is served, and how its answers are cached.
///
/// `Copy`, so a handler reads its own entry by value: borrowing the constant from inside the
/// handler would ask the compiler to promote it, which needs the handler's type — a cycle.
#[derive(Clone, Copy)]
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    pub summary: &'static str,
    pub params: &'static [Param],
    /// Answers in JSON, CSV and Arrow, paged when a list.
    pub formats: bool,
    /// Routes `method` to the handler function: `|method| on(method, handler)`, so the method is
    /// written once, in [`Endpoint::method`].
    pub handler: fn(MethodFilter) -> MethodRouter<Arc<AppState>>,
    /// The first part of the cache key of every answer it caches (`None`: answers are not cached).
    pub cache_key: Option<&'static str>,
}

impl Endpoint {
    /// The handler, routed under [`Endpoint::method`].
    pub fn route(&self) -> MethodRouter<Arc<AppState>> {
        (self.handler)(self.method.filter())
    }

    /// The cache key of one answer: the endpoint's prefix, then `rest` (what tells its answers apart).
    pub fn key(self, rest: std::fmt::Arguments) -> String {
        let prefix = self.cache_key.unwrap_or_else(|| panic!("{} declares no cache key", self.path));
        format!("{prefix}|{rest}")
    }
}

/// One query parameter.
pub struct Param {
    pub name: &'static str,
    pub description: &'static str,
    pub required: bool,
    /// The accepted values, when they are a closed set.
    pub values: &'static [&'static str],
    /// `string` or `integer`.
    pub kind: &'static str,
    /// The accepted range of an integer.
    pub range: Option<(u64, u64)>,
}

impl Param {
    pub const fn text(name: &'static str, description: &'static str) -> Self {
        Self { name, description, required: false, values: &[], kind: "string", range: None }
    }

    pub const fn int(name: &'static str, description: &'static str) -> Self {
        Self { name, description, required: false, values: &[], kind: "integer", range: None }
    }

    /// An integer in `min..=max`.
    pub const fn int_in(name: &'static str, description: &'static str, min: u64, max: u64) -> Self {
        Self { range: Some((min, max)), ..Self::int(name, description) }
    }

    pub const fn one_of(name: &'static str, description: &'static str, values: &'static [&'static str]) -> Self {
        Self { name, description, required: false, values, kind: "string", range: None }
    }

    pub const fn required(name: &'static str, description: &'static str) -> Self {
        Self { name, description, required: true, values: &[], kind: "string", range: None }
    }
}

/// The parameters several endpoints share (`params::Filters`, `render::View`).
pub const FROM: Param = Param::text("from", "Start of the range, RFC 3339 or YYYY-MM-DD (UTC), inclusive.");
pub const TO: Param = Param::text("to", "End of the range, exclusive. Default: the end of the current UTC hour.");
pub const REPOSITORY: Param = Param::text("repository", "Only this repository, e.g. acme/billing.");
pub const BRANCH: Param = Param::text("branch", "Only this branch.");
pub const SUITE: Param = Param::text("suite", "Only this suite.");
pub const FORMAT: Param = Param::one_of("format", "Answer format; overrides Accept.", &["json", "csv", "arrow"]);
pub const PAGE: Param = Param::int_in("page", "Page number, from 1.", 1, usize::MAX as u64);
pub const SIZE: Param =
    Param::int_in("size", "Rows per page, 1..=100000 (default 1000).", 1, crate::render::MAX_PAGE_SIZE as u64);
