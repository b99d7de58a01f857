//! `testlake junit`: JUnit XML reports → events → the topic (or JSON lines on stdout).
//! Run, commit, branch and repository come from flags or from the usual CI environment.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use rdkafka::producer::FutureRecord;
pub use report::RunContext;
use testlake_ingest::KafkaConfig;
use testlake_schemas::TestEvent;

mod report;

/// The run context the usual CI environment variables describe (GitHub Actions, GitLab CI,
/// CircleCI, Buildkite, Jenkins), reading variables through `var`. Fields it cannot find stay
/// empty.
pub fn context_from_env(var: impl Fn(&str) -> Option<String>) -> RunContext {
    let first = |names: &[&str]| names.iter().find_map(|n| var(n).filter(|v| !v.is_empty()));
    let (provider, repository, branch, commit, run, job) = if var("GITHUB_ACTIONS").is_some() {
        let run = first(&["GITHUB_RUN_ID"]).map(|id| match var("GITHUB_RUN_ATTEMPT") {
            Some(attempt) if attempt != "1" => format!("{id}-{attempt}"),
            _ => id,
        });
        (
            "github-actions",
            first(&["GITHUB_REPOSITORY"]),
            first(&["GITHUB_HEAD_REF", "GITHUB_REF_NAME"]),
            first(&["GITHUB_SHA"]),
            run,
            first(&["GITHUB_JOB"]),
        )
    } else if var("GITLAB_CI").is_some() {
        (
            "gitlab-ci",
            first(&["CI_PROJECT_PATH"]),
            first(&["CI_COMMIT_REF_NAME"]),
            first(&["CI_COMMIT_SHA"]),
            first(&["CI_PIPELINE_ID"]),
            first(&["CI_JOB_NAME", "CI_JOB_ID"]),
        )
    } else if var("CIRCLECI").is_some() {
        let repo = match (var("CIRCLE_PROJECT_USERNAME"), var("CIRCLE_PROJECT_REPONAME")) {
            (Some(user), Some(name)) => Some(format!("{user}/{name}")),
            _ => None,
        };
        (
            "circleci",
            repo,
            first(&["CIRCLE_BRANCH"]),
            first(&["CIRCLE_SHA1"]),
            first(&["CIRCLE_WORKFLOW_ID", "CIRCLE_BUILD_NUM"]),
            first(&["CIRCLE_JOB"]),
        )
    } else if var("BUILDKITE").is_some() {
        (
            "buildkite",
            first(&["BUILDKITE_PIPELINE_SLUG"]),
            first(&["BUILDKITE_BRANCH"]),
            first(&["BUILDKITE_COMMIT"]),
            first(&["BUILDKITE_BUILD_ID"]),
            first(&["BUILDKITE_STEP_KEY", "BUILDKITE_JOB_ID"]),
        )
    } else if var("JENKINS_URL").is_some() {
        (
            "jenkins",
            first(&["JOB_NAME"]),
            first(&["BRANCH_NAME", "GIT_BRANCH"]),
            first(&["GIT_COMMIT"]),
            first(&["BUILD_TAG"]),
            first(&["STAGE_NAME"]),
        )
    } else {
        return RunContext::default();
    };
    RunContext {
        repository: repository.unwrap_or_default(),
        branch: branch.unwrap_or_default(),
        commit_sha: commit.unwrap_or_default(),
        run_id: run.unwrap_or_default(),
        job_id: job,
        ci_provider: Some(provider.to_owned()),
        host: first(&["RUNNER_NAME", "CI_RUNNER_DESCRIPTION", "NODE_NAME", "HOSTNAME"]),
    }
}

/// Converts every file; fails, naming each bad file and line, before anything is produced.
pub fn convert(files: &[PathBuf], context: &RunContext) -> Result<Vec<TestEvent>> {
    for (field, value) in [
        ("--repository", &context.repository),
        ("--branch", &context.branch),
        ("--commit", &context.commit_sha),
        ("--run-id", &context.run_id),
    ] {
        if value.is_empty() {
            bail!("{field} is required (not found in the CI environment either)");
        }
    }
    let now = Utc::now();
    let mut events = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        let name = path.display().to_string();
        let xml = std::fs::read_to_string(path).with_context(|| format!("reading {name}"))?;
        match report::parse(&name, &xml, context, now) {
            Ok(mut converted) => events.append(&mut converted),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(events)
}

/// Produces the events to `topic` (which must exist), keyed by test id, and waits until the
/// broker has them all.
pub async fn produce(kafka: &KafkaConfig, topic: &str, events: &[TestEvent]) -> Result<()> {
    let producer = crate::kafka::events_producer(kafka)?;
    let payloads: Vec<String> = events.iter().map(TestEvent::to_json).collect();
    let mut deliveries = Vec::with_capacity(events.len());
    for (event, payload) in events.iter().zip(&payloads) {
        let record = FutureRecord::to(topic).key(&event.test_id).payload(payload);
        let delivery = match producer.send_result(record) {
            Ok(d) => d,
            Err((e, _)) => bail!("enqueueing an event: {e}"),
        };
        deliveries.push(delivery);
    }
    for d in deliveries {
        tokio::time::timeout(Duration::from_secs(60), d)
            .await
            .context("delivery timed out")?
            .context("producer dropped")?
            .map_err(|(e, _)| anyhow::anyhow!("delivery failed: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn reads_github_actions_and_gitlab_environments() {
        let gh = context_from_env(env(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_REPOSITORY", "acme/billing"),
            ("GITHUB_REF_NAME", "main"),
            ("GITHUB_SHA", "abc"),
            ("GITHUB_RUN_ID", "77"),
            ("GITHUB_RUN_ATTEMPT", "2"),
            ("GITHUB_JOB", "unit"),
        ]));
        assert_eq!((gh.repository.as_str(), gh.branch.as_str(), gh.run_id.as_str()), ("acme/billing", "main", "77-2"));
        assert_eq!(gh.ci_provider.as_deref(), Some("github-actions"));
        let gl = context_from_env(env(&[
            ("GITLAB_CI", "true"),
            ("CI_PROJECT_PATH", "acme/search"),
            ("CI_COMMIT_REF_NAME", "feature"),
            ("CI_COMMIT_SHA", "def"),
            ("CI_PIPELINE_ID", "9"),
            ("CI_JOB_NAME", "test 1/4"),
        ]));
        assert_eq!((gl.repository.as_str(), gl.job_id.as_deref()), ("acme/search", Some("test 1/4")));
        assert_eq!(context_from_env(env(&[])), RunContext::default());
    }

    #[test]
    fn conversion_needs_a_context_and_reports_every_bad_file() {
        let dir = std::env::temp_dir().join(format!("testlake-junit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.xml");
        let bad = dir.join("bad.xml");
        std::fs::write(&good, r#"<testsuite name="S"><testcase classname="C" name="t" time="1"/></testsuite>"#)
            .unwrap();
        std::fs::write(&bad, "<testsuite>\n<testcase name=\"x\">\n</testsuite>").unwrap();
        let context = RunContext {
            repository: "r".into(),
            branch: "b".into(),
            commit_sha: "c".into(),
            run_id: "1".into(),
            ..RunContext::default()
        };
        assert_eq!(convert(std::slice::from_ref(&good), &context).unwrap().len(), 1);
        let err = convert(&[good.clone(), bad.clone()], &context).unwrap_err().to_string();
        assert!(err.contains(&format!("{}:3: malformed XML", bad.display())), "{err}");
        let err = convert(&[good], &RunContext::default()).unwrap_err().to_string();
        assert!(err.contains("--repository is required"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
