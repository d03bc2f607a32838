//! `EXPLAIN` of a diesel query on PostgreSQL, with the query's own bind values: for the plan
//! tests and the benchmarks that print plans.

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::Text;

/// `EXPLAIN (<options>) <query>`.
struct Explain<Q> {
    options: &'static str,
    query: Q,
}

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for Explain<Q> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.unsafe_to_cache_prepared();
        out.push_sql("EXPLAIN (");
        out.push_sql(self.options);
        out.push_sql(") ");
        self.query.walk_ast(out.reborrow())
    }
}

impl<Q> QueryId for Explain<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q> Query for Explain<Q> {
    type SqlType = Text;
}

impl<Q> RunQueryDsl<PgConnection> for Explain<Q> {}

/// The plan of `query` as `EXPLAIN (<options>)` prints it (e.g. `"ANALYZE, BUFFERS"`, or
/// `"FORMAT JSON"`), one line per row.
pub fn explain<Q: QueryFragment<Pg>>(
    conn: &mut PgConnection,
    options: &'static str,
    query: Q,
) -> String {
    Explain { options, query }
        .load::<String>(conn)
        .unwrap_or_else(|e| panic!("EXPLAIN ({options}): {e}"))
        .join("\n")
}
