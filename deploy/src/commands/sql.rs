//! `testlake sql`: one read-only statement over the lake's tables, printed.

use anyhow::Result;
use testlake_schemas::Lake;

use crate::cli::SqlCommand;

pub async fn run(command: SqlCommand) -> Result<()> {
    let limits = command.limits();
    let statement = match command.statement {
        Some(s) => s,
        None => std::io::read_to_string(std::io::stdin())?,
    };
    let lake = Lake::open(&command.lake.lake)?;
    // From the Delta table's checkpoint, not a replay of every commit-log entry.
    let mut committed = testlake_schemas::log_reader::CommittedFiles::from_delta();
    let ctx = testlake_query::sql::session(&lake, &mut committed, &limits).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let engine = testlake_query::sql::SqlEngine::new(&limits);
    let answer = engine.run(&ctx, &statement, &limits).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let stdout = std::io::stdout();
    match command.format.as_str() {
        "table" => println!("{}", arrow::util::pretty::pretty_format_batches(&[answer.batch])?),
        "csv" => arrow::csv::WriterBuilder::new().with_header(true).build(stdout.lock()).write(&answer.batch)?,
        "json" => {
            let mut writer = arrow::json::LineDelimitedWriter::new(stdout.lock());
            writer.write(&answer.batch)?;
            writer.finish()?;
        }
        other => anyhow::bail!("--format must be table, csv or json, got {other:?}"),
    }
    if answer.truncated {
        eprintln!("(truncated at {} rows; raise --max-rows for more)", limits.max_rows);
    }
    Ok(())
}
