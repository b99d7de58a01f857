//! `testlake junit`: JUnit XML reports → events → the topic (or stdout).

use anyhow::Result;
use tracing::info;

use crate::cli::JunitCommand;

pub async fn run(command: JunitCommand) -> Result<()> {
    let JunitCommand { kafka, files, repository, branch, commit, run_id, job_id, dry_run } = command;
    let mut context = testlake::junit::context_from_env(|name| std::env::var(name).ok());
    for (flag, field) in [
        (repository, &mut context.repository),
        (branch, &mut context.branch),
        (commit, &mut context.commit_sha),
        (run_id, &mut context.run_id),
    ] {
        if let Some(value) = flag {
            *field = value;
        }
    }
    context.job_id = job_id.or(context.job_id);
    let events = testlake::junit::convert(&files, &context)?;
    if dry_run {
        for event in &events {
            println!("{}", event.to_json());
        }
    } else {
        let client = kafka.config()?;
        testlake::kafka::prepare_topics(&client, &[kafka.events_topic()], kafka.topics.creation(false)).await?;
        testlake::junit::produce(&client, &kafka.topic, &events).await?;
        info!(events = events.len(), files = files.len(), topic = %kafka.topic, "produced");
    }
    Ok(())
}
