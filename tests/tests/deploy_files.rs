//! `deploy/`'s container image, compose file and Kubernetes manifests, validated with what this
//! machine can run — no Docker daemon, no cluster: Debian's `docker-compose` 1.29 resolves and
//! checks the compose file (`config`, which needs no daemon); PyPI's `kubernetes-validate`
//! checks every manifest, strictly (no unknown field), against the bundled schemas of
//! Kubernetes [`KUBERNETES`]; every TOML file they carry is loaded by `testlake config show`
//! for each process that reads it; and the files agree with each other (ports, paths, image,
//! names, secrets) as a reviewer would check by hand. Both tools come from
//! `deploy/scripts/setup.sh`; the YAML and TOML are read with the test venv's Python (PyYAML,
//! which kubernetes-validate brings, and tomllib).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use testlake_tests::s3::venv_tool;
use testlake_tests::testlake_binary;

/// The Kubernetes version the manifests are validated against (kubernetes-validate bundles the
/// schemas of 1.25 to 1.37; 1.33 is supported by every major managed offering).
const KUBERNETES: &str = "1.33.0";

/// Where the configuration file is in the image, named by `TESTLAKE_CONFIG`.
const CONFIG_PATH: &str = "/etc/testlake/testlake.toml";

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").canonicalize().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The image every file names: `testlake:<the workspace's version>`.
fn image() -> String {
    format!("testlake:{}", env!("CARGO_PKG_VERSION"))
}

/// Reads YAML (every document) or TOML with the venv's Python, as JSON.
fn parse(kind: &str, path: &Path) -> Value {
    const CODE: &str = "import json, sys\n\
        kind, path = sys.argv[1], sys.argv[2]\n\
        if kind == 'toml':\n    import tomllib\n    data = tomllib.load(open(path, 'rb'))\n\
        else:\n    import yaml\n    data = [d for d in yaml.safe_load_all(open(path)) if d is not None]\n\
        json.dump(data, sys.stdout)\n";
    let out = Command::new(venv_tool("python")).args(["-c", CODE, kind, path.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "reading {}: {}\n(run deploy/scripts/setup.sh)", path.display(), text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn yaml(path: &Path) -> Vec<Value> {
    match parse("yaml", path) {
        Value::Array(docs) => docs,
        other => panic!("{other}"),
    }
}

fn toml(path: &Path) -> Value {
    parse("toml", path)
}

/// The port of a `host:port` listen address.
fn port_of(listen: &Value) -> u16 {
    let listen = listen.as_str().unwrap_or_else(|| panic!("not an address: {listen}"));
    listen.rsplit(':').next().unwrap().parse().unwrap_or_else(|_| panic!("no port in {listen}"))
}

/// Seconds of a duration as the configuration writes it (`"30s"`, `"2m"`).
fn seconds(duration: &Value) -> u64 {
    let d = duration.as_str().unwrap();
    let (n, unit) = d.split_at(d.find(|c: char| !c.is_ascii_digit()).unwrap());
    n.parse::<u64>().unwrap()
        * match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => panic!("unit of {d}"),
        }
}

/// `testlake --config FILE config show COMMAND`, which loads the file as COMMAND would (unknown
/// keys and bad values refused); its output, with no TESTLAKE_* variable of the test's
/// environment in the way.
fn config_show(file: &Path, command: &str) -> String {
    let mut cmd = Command::new(testlake_binary());
    cmd.args(["--config", file.to_str().unwrap(), "config", "show", command]);
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("TESTLAKE_")) {
        cmd.env_remove(name);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "testlake --config {} config show {command}:\n{}", file.display(), text(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn docker_compose(args: &[&str]) -> Output {
    Command::new("docker-compose")
        .args(["-f", deploy().join("compose.yaml").to_str().unwrap()])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run docker-compose ({e}): run deploy/scripts/setup.sh (it installs Debian's docker-compose)")
        })
}

/// The Dockerfile, and the values the other files must agree with: its runtime user id.
fn dockerfile() -> String {
    std::fs::read_to_string(deploy().join("docker/Dockerfile")).unwrap()
}

/// The `ENV TESTLAKE_CONFIG` of the Dockerfile, the UID of its user, and its `EXPOSE`d ports.
fn image_settings() -> (String, u64, BTreeSet<u16>) {
    let file = dockerfile();
    let config = file
        .lines()
        .find_map(|l| l.strip_prefix("ENV TESTLAKE_CONFIG="))
        .expect("ENV TESTLAKE_CONFIG= in the Dockerfile")
        .trim()
        .to_owned();
    let uid = file
        .split("--uid ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("useradd --uid N in the Dockerfile");
    let expose = file
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .expect("EXPOSE in the Dockerfile")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    (config, uid, expose)
}

/// The Dockerfile builds the release binary with the default features on bookworm, with a Rust
/// that can build every locked dependency; its runtime is non-root with the configuration where
/// `TESTLAKE_CONFIG` says, and the configuration it ships loads in every long-running command.
#[test]
fn the_image_definition_builds_what_the_tests_run() {
    let file = dockerfile();
    assert!(file.contains("FROM rust:${RUST_VERSION}-bookworm AS build"), "the build stage is not bookworm's Rust");
    assert!(file.contains("\nFROM debian:bookworm-slim\n"), "the runtime is not bookworm-slim");
    let build = file.lines().find(|l| l.contains("cargo build")).expect("a cargo build line");
    assert!(build.contains("--release") && build.contains("--locked") && build.contains("-p testlake"), "{build}");
    assert!(
        !build.contains("--features") && !build.contains("--no-default-features"),
        "not the default features: {build}"
    );
    assert!(file.contains("ENTRYPOINT [\"testlake\"]"), "ENTRYPOINT");
    assert!(file.contains("ca-certificates"), "no ca-certificates in the image");
    let user = file.lines().find_map(|l| l.strip_prefix("USER ")).expect("USER");
    assert!(!user.starts_with('0') && !user.starts_with("root"), "USER {user}");

    let (config, uid, expose) = image_settings();
    assert_eq!(config, CONFIG_PATH);
    assert_eq!(user.trim(), format!("{uid}:{uid}"), "USER is the created user, numerically (runAsNonRoot checks it)");
    assert!(
        file.contains(&format!("COPY deploy/docker/testlake.toml {CONFIG_PATH}")),
        "the image's configuration is not copied to {CONFIG_PATH}"
    );
    let ignore = std::fs::read_to_string(deploy().join("docker/Dockerfile.dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "target/"), "the build context would carry target/");

    // The shipped configuration loads, and its ports are the exposed ones.
    let shipped = deploy().join("docker/testlake.toml");
    for command in ["ingest", "compact", "compute", "serve", "all"] {
        config_show(&shipped, command);
    }
    let values = toml(&shipped);
    let ports: BTreeSet<u16> = [port_of(&values["serve"]["listen"]), port_of(&values["probes"]["listen"])].into();
    assert_eq!(ports, expose, "EXPOSE against the image's configuration");

    // RUST_VERSION is at least every locked dependency's rust-version.
    // Three parts: the image tag `1.95` is the newest 1.95.x, at least 1.95.0.
    let three = |v: &str| {
        let mut parts: Vec<u64> = v.split('.').map(|n| n.parse().unwrap()).collect();
        parts.resize(3, 0);
        parts
    };
    let rust = three(file.lines().find_map(|l| l.strip_prefix("ARG RUST_VERSION=")).expect("ARG RUST_VERSION="));
    // Filtered to this platform: a fresh machine has downloaded only the crates it builds, and
    // an unfiltered resolve offline would need the Windows-only ones too.
    let platform = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline", "--filter-platform", &platform])
        .current_dir(deploy())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo metadata");
    let metadata: Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes: BTreeMap<&str, &Value> =
        metadata["resolve"]["nodes"].as_array().unwrap().iter().map(|n| (n["id"].as_str().unwrap(), n)).collect();
    let packages: BTreeMap<&str, &Value> =
        metadata["packages"].as_array().unwrap().iter().map(|p| (p["id"].as_str().unwrap(), p)).collect();
    let root = packages.values().find(|p| p["name"] == "testlake").unwrap()["id"].as_str().unwrap();
    let (mut seen, mut todo) = (BTreeSet::new(), vec![root]);
    while let Some(id) = todo.pop() {
        if seen.insert(id) {
            for dep in nodes[id]["deps"].as_array().unwrap() {
                if dep["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"] != "dev") {
                    todo.push(dep["pkg"].as_str().unwrap());
                }
            }
        }
    }
    let needed = seen
        .iter()
        .filter_map(|id| {
            let p = packages[id];
            Some((three(p["rust_version"].as_str()?), p["name"].as_str().unwrap()))
        })
        .max()
        .unwrap();
    assert!(rust >= needed.0, "RUST_VERSION {rust:?} is older than {} needs ({:?})", needed.1, needed.0);
}

/// The compose file passes `docker-compose config` and its parts fit together: Kafka in KRaft
/// mode, MinIO with its bucket, the three testlake services on one configuration file (which
/// loads), healthchecks and scrape targets on the ports that file sets, Grafana on Prometheus.
#[test]
fn the_compose_file_is_valid_and_its_parts_agree() {
    let quiet = docker_compose(&["config", "-q"]);
    assert!(quiet.status.success(), "docker-compose config -q:\n{}", text(&quiet));
    let resolved = docker_compose(&["--profile", "fleet", "config"]);
    assert!(resolved.status.success(), "docker-compose config:\n{}", text(&resolved));
    let dir = tempfile::tempdir().unwrap();
    let resolved_file = dir.path().join("compose.resolved.yaml");
    std::fs::File::create(&resolved_file).unwrap().write_all(&resolved.stdout).unwrap();
    let compose = yaml(&resolved_file).remove(0);
    let services = compose["services"].as_object().unwrap();
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    for name in ["kafka", "minio", "minio-init", "ingest", "compute", "serve", "fleet", "prometheus", "grafana"] {
        assert!(names.contains(name), "no service {name}: {names:?}");
    }

    // Every bind mount's source exists (`config` does not check).
    let mut mounts: BTreeMap<(&str, &str), PathBuf> = BTreeMap::new();
    for (name, service) in services {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let volume = volume.as_str().unwrap();
            let parts: Vec<&str> = volume.split(':').collect();
            if parts[0].starts_with('/') {
                let source = PathBuf::from(parts[0]);
                assert!(source.exists(), "{name} mounts {volume}: the source does not exist");
                mounts.insert((name.as_str(), parts[1]), source);
            }
        }
    }

    // Kafka: Apache's image, KRaft (no ZooKeeper), advertising kafka:9092 to the other containers.
    let kafka = &services["kafka"];
    assert!(kafka["image"].as_str().unwrap().starts_with("apache/kafka:"), "{kafka}");
    let roles = kafka["environment"]["KAFKA_PROCESS_ROLES"].as_str().unwrap();
    assert!(roles.contains("broker") && roles.contains("controller"), "not KRaft: {roles}");
    assert!(kafka["environment"].get("KAFKA_ZOOKEEPER_CONNECT").is_none());
    let advertised = kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"].as_str().unwrap();

    // The testlake services share one configuration file, and it loads for each.
    let config_file = mounts.get(&("ingest", CONFIG_PATH)).expect("ingest mounts the configuration").clone();
    let config = toml(&config_file);
    let probe_port = port_of(&config["probes"]["listen"]);
    let serve_port = port_of(&config["serve"]["listen"]);
    let (image_config, _, _) = image_settings();
    for (name, port) in [("ingest", probe_port), ("compute", probe_port), ("serve", serve_port), ("fleet", 0)] {
        let service = &services[name];
        assert_eq!(service["image"], image(), "{name}");
        assert_eq!(service["build"]["dockerfile"], "deploy/docker/Dockerfile", "{name}");
        assert_eq!(Path::new(service["build"]["context"].as_str().unwrap()), deploy().parent().unwrap(), "{name}");
        assert_eq!(mounts.get(&(name, image_config.as_str())), Some(&config_file), "{name} mounts another file");
        let command: Vec<&str> = service["command"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        if name == "fleet" {
            assert_eq!(command[0], "produce");
            continue;
        }
        assert_eq!(command, [name], "{name}");
        config_show(&config_file, name);
        let check = service["healthcheck"]["test"].as_array().unwrap();
        let url = format!("http://127.0.0.1:{port}/healthz");
        assert!(check.iter().any(|a| a == &Value::from(url.clone())), "{name}'s healthcheck is not {url}: {check:?}");
    }
    let published: Vec<u64> =
        services["serve"]["ports"].as_array().unwrap().iter().map(|p| p["target"].as_u64().unwrap()).collect();
    assert_eq!(published, [u64::from(serve_port)], "serve publishes another port than it listens on");
    assert!(
        config["serve"]["allowed_hosts"].as_array().unwrap().contains(&Value::from("serve")),
        "the service's container name is not an allowed host"
    );

    // The configuration names the stack's Kafka, MinIO and bucket.
    let brokers = config["kafka"]["brokers"].as_str().unwrap();
    assert!(advertised.contains(&format!("PLAINTEXT://{brokers}")), "brokers {brokers} against {advertised}");
    let lake = config["lake"]["url"].as_str().unwrap();
    let bucket = lake.strip_prefix("s3://").and_then(|r| r.split('/').next()).expect("an s3:// lake");
    let init = services["minio-init"]["entrypoint"].as_array().unwrap().last().unwrap().as_str().unwrap().to_owned();
    assert!(init.contains(&format!("mc mb --ignore-existing local/{bucket}")), "{init}");
    let env = &services["ingest"]["environment"];
    assert_eq!(env["AWS_ENDPOINT_URL"], "http://minio:9000");
    assert_eq!(env["AWS_ACCESS_KEY_ID"], services["minio"]["environment"]["MINIO_ROOT_USER"]);
    assert_eq!(env["AWS_SECRET_ACCESS_KEY"], services["minio"]["environment"]["MINIO_ROOT_PASSWORD"]);

    // Prometheus scrapes each testlake service where its configuration serves /metrics, and
    // loads the alert rules from where its configuration says.
    let prometheus_file = mounts.get(&("prometheus", "/etc/prometheus/prometheus.yml")).expect("prometheus.yml");
    assert_eq!(prometheus_file, &deploy().join("monitoring/prometheus.yml"));
    let prometheus = yaml(prometheus_file).remove(0);
    let mut targets = BTreeMap::new();
    for job in prometheus["scrape_configs"].as_array().unwrap() {
        for target in job["static_configs"][0]["targets"].as_array().unwrap() {
            let (host, port) = target.as_str().unwrap().split_once(':').unwrap();
            targets
                .insert(host.to_owned(), (job["job_name"].as_str().unwrap().to_owned(), port.parse::<u16>().unwrap()));
        }
    }
    let expected: BTreeMap<String, (String, u16)> =
        [("ingest", probe_port), ("compute", probe_port), ("serve", serve_port)]
            .into_iter()
            .map(|(s, p)| (s.to_owned(), (format!("testlake-{s}"), p)))
            .collect();
    assert_eq!(targets, expected, "scrape targets against the services and the configuration's ports");
    for rules in prometheus["rule_files"].as_array().unwrap() {
        let rules = rules.as_str().unwrap();
        let inside = format!("/etc/prometheus/{rules}");
        assert_eq!(
            mounts.get(&("prometheus", inside.as_str())),
            Some(&deploy().join("monitoring").join(rules)),
            "{rules}"
        );
    }

    // Grafana reads Prometheus and the dashboard from where they are.
    let sources = mounts.get(&("grafana", "/etc/grafana/provisioning/datasources/testlake.yml")).expect("data sources");
    let source = &yaml(sources)[0]["datasources"][0];
    assert_eq!(source["type"], "prometheus");
    assert_eq!(source["url"], "http://prometheus:9090", "the data source is not the prometheus service");
    let providers = mounts.get(&("grafana", "/etc/grafana/provisioning/dashboards/testlake.yml")).expect("providers");
    let folder = yaml(providers)[0]["providers"][0]["options"]["path"].as_str().unwrap().to_owned();
    assert_eq!(
        mounts.get(&("grafana", format!("{folder}/testlake.json").as_str())),
        Some(&deploy().join("monitoring/grafana-dashboard.json")),
        "the dashboard is not in the provider's folder {folder}"
    );
}

/// Every manifest of `deploy/k8s/` passes kubernetes-validate in strict mode (which refuses a
/// misspelt field: checked on one), and the manifests agree with the configuration they carry
/// (which loads for every process and holds the production matrix), the image and each other.
#[test]
fn the_kubernetes_manifests_are_valid_and_agree() {
    let k8s = deploy().join("k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&k8s)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml") && !p.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    let validate = |files: &[PathBuf]| {
        Command::new(venv_tool("kubernetes-validate"))
            .args(["--strict", "--kubernetes-version", KUBERNETES])
            .args(files)
            .output()
            .unwrap()
    };
    let out = validate(&files);
    let report = text(&out);
    assert!(out.status.success(), "kubernetes-validate:\n{report}");
    assert!(!report.contains("WARN") && !report.contains("ERROR"), "kubernetes-validate:\n{report}");
    let docs: Vec<(PathBuf, Value)> = files.iter().flat_map(|f| yaml(f).into_iter().map(|d| (f.clone(), d))).collect();
    assert_eq!(
        report.matches(" passed for resource ").count(),
        docs.len(),
        "not every document was validated:\n{report}"
    );

    let dir = tempfile::tempdir().unwrap();
    let misspelt = dir.path().join("misspelt.yaml");
    let mut deployment = docs.iter().find(|(_, d)| d["kind"] == "Deployment").unwrap().1.clone();
    let replicas = deployment["spec"].as_object_mut().unwrap().remove("replicas").unwrap();
    deployment["spec"]["replica"] = replicas;
    std::fs::write(&misspelt, serde_json::to_string(&deployment).unwrap()).unwrap();
    let refused = validate(&[misspelt]);
    assert!(!refused.status.success(), "a misspelt field passed:\n{}", text(&refused));

    // kustomization.yaml applies exactly these files, with the image's tag.
    let kustomization = yaml(&k8s.join("kustomization.yaml")).remove(0);
    let listed: BTreeSet<String> =
        kustomization["resources"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_owned()).collect();
    let present: BTreeSet<String> = files.iter().map(|f| f.file_name().unwrap().to_str().unwrap().to_owned()).collect();
    assert_eq!(listed, present, "kustomization.yaml resources");
    let namespace = kustomization["namespace"].as_str().unwrap();
    let (name, tag) = image().split_once(':').map(|(n, t)| (n.to_owned(), t.to_owned())).unwrap();
    assert_eq!(kustomization["images"][0]["name"], name.as_str());
    assert_eq!(kustomization["images"][0]["newTag"], tag.as_str());

    let by_kind =
        |kind: &str| -> Vec<&Value> { docs.iter().filter(|(_, d)| d["kind"] == kind).map(|(_, d)| d).collect() };
    let named = |kind: &str, name: &str| -> &Value {
        by_kind(kind).into_iter().find(|d| d["metadata"]["name"] == name).unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    assert_eq!(by_kind("Namespace")[0]["metadata"]["name"], namespace);
    for (file, doc) in &docs {
        if doc["kind"] != "Namespace" {
            assert_eq!(doc["metadata"]["namespace"], namespace, "{}: {}", file.display(), doc["metadata"]["name"]);
        }
    }

    // The configuration: it loads for each process; it is production's matrix; it holds no secret.
    let config_maps = by_kind("ConfigMap");
    let config_map =
        config_maps.iter().find(|c| c["data"].get("testlake.toml").is_some()).expect("a ConfigMap with testlake.toml");
    let config_file = dir.path().join("testlake.toml");
    std::fs::write(&config_file, config_map["data"]["testlake.toml"].as_str().unwrap()).unwrap();
    for command in ["ingest", "compute", "serve"] {
        config_show(&config_file, command);
    }
    let config = toml(&config_file);
    let production = toml(&deploy().join("config/production.toml"));
    assert_eq!(
        config["compute"], production["compute"],
        "[compute] is not production's (deploy/config/production.toml)"
    );
    for (key, value) in
        [("interval", "60m"), ("hourly_lookback", "24h"), ("daily_lookback", "7d"), ("flaky_refresh", "6h")]
    {
        assert_eq!(config["compute"][key], value, "[compute] {key}");
    }
    assert_eq!(config["compute"]["batch_size"], 5000);
    assert!(config["serve"].get("api_token").is_none(), "the API token is in the ConfigMap");
    let properties = config["kafka"]["properties"].as_object().cloned().unwrap_or_default();
    assert!(!properties.keys().any(|k| k.contains("password") || k.contains("username")), "{properties:?}");
    for map in &config_maps {
        for key in map["data"].as_object().unwrap().keys() {
            assert!(!["SECRET", "PASSWORD", "TOKEN"].iter().any(|s| key.contains(s)), "{key} in a ConfigMap");
        }
    }
    let probe_port = port_of(&config["probes"]["listen"]);
    let serve_port = port_of(&config["serve"]["listen"]);
    let grace = seconds(&config["shutdown"]["grace"]);

    // The Secret's keys, and the Deployments' use of them, the configuration and the probes.
    let secrets = by_kind("Secret");
    let secret = secrets[0];
    let secret_keys: BTreeSet<&str> = secret["stringData"].as_object().unwrap().keys().map(String::as_str).collect();
    let (image_config, uid, _) = image_settings();
    let config_dir = Path::new(&image_config).parent().unwrap().to_str().unwrap().to_owned();
    for (component, port, replicas) in [("ingest", probe_port, 2), ("compute", probe_port, 1), ("serve", serve_port, 2)]
    {
        let deployment = named("Deployment", &format!("testlake-{component}"));
        let spec = &deployment["spec"];
        assert_eq!(spec["replicas"], replicas, "{component}");
        let pod = &spec["template"]["spec"];
        let labels = &spec["template"]["metadata"]["labels"];
        for (k, v) in spec["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(&labels[k], v, "{component}: the selector does not select its pods");
        }
        assert!(
            pod["terminationGracePeriodSeconds"].as_u64().unwrap() > grace,
            "{component}: a kill before [shutdown] grace"
        );
        assert_eq!(pod["securityContext"]["runAsUser"], uid, "{component}: not the image's user");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{component}");
        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "{component}");
        let container = &containers[0];
        assert_eq!(container["image"], image(), "{component}");
        assert_eq!(container["args"][0], component, "{component}");

        // The probe port: the container port named by the probes, the configuration's, scraped.
        let ports: BTreeMap<&str, u64> = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap(), p["containerPort"].as_u64().unwrap()))
            .collect();
        let resolve = |port: &Value| port.as_u64().unwrap_or_else(|| ports[port.as_str().unwrap()]);
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            assert_eq!(container[probe]["httpGet"]["path"], path, "{component} {probe}");
            assert_eq!(resolve(&container[probe]["httpGet"]["port"]), u64::from(port), "{component} {probe}");
        }
        let annotations = &spec["template"]["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/port"], port.to_string(), "{component}: scraped on another port");

        // The configuration mounted where TESTLAKE_CONFIG says.
        let env: BTreeMap<&str, &Value> =
            container["env"].as_array().unwrap().iter().map(|e| (e["name"].as_str().unwrap(), e)).collect();
        assert_eq!(env["TESTLAKE_CONFIG"]["value"], image_config.as_str(), "{component}");
        let mount =
            container["volumeMounts"].as_array().unwrap().iter().find(|m| m["mountPath"] == config_dir.as_str());
        let volume_name =
            mount.unwrap_or_else(|| panic!("{component}: nothing mounted at {config_dir}"))["name"].clone();
        let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == volume_name).unwrap();
        assert_eq!(volume["configMap"]["name"], config_map["metadata"]["name"], "{component}");

        // Secrets from the Secret, by keys it has; the API token in serve only.
        for (name, var) in &env {
            if let Some(reference) = var.get("valueFrom").and_then(|v| v.get("secretKeyRef")) {
                assert_eq!(reference["name"], secret["metadata"]["name"], "{component} {name}");
                assert!(secret_keys.contains(reference["key"].as_str().unwrap()), "{component} {name}: no such key");
            }
        }
        assert_eq!(env.contains_key("TESTLAKE_API_TOKEN"), component == "serve", "{component}: the API token");
        assert!(env.contains_key("TESTLAKE_KAFKA_SASL_PASSWORD"), "{component}: no Kafka password");
        for source in container["envFrom"].as_array().into_iter().flatten() {
            named("ConfigMap", source["configMapRef"]["name"].as_str().unwrap());
        }

        // Requests and limits for CPU and memory, each request within its limit.
        let resources = &container["resources"];
        for what in ["cpu", "memory"] {
            let request = quantity(&resources["requests"][what]);
            let limit = quantity(&resources["limits"][what]);
            assert!(request > 0.0 && request <= limit, "{component} {what}: request {request} limit {limit}");
        }
    }

    // The Service sends to serve's port, and serve allows the Service's names.
    let service = &by_kind("Service")[0];
    let serve = named("Deployment", "testlake-serve");
    for (k, v) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&serve["spec"]["template"]["metadata"]["labels"][k], v, "the Service does not select serve");
    }
    let target = &service["spec"]["ports"][0]["targetPort"];
    let serve_ports = serve["spec"]["template"]["spec"]["containers"][0]["ports"].as_array().unwrap();
    let target_port = target.as_u64().unwrap_or_else(|| {
        serve_ports.iter().find(|p| &p["name"] == target).unwrap()["containerPort"].as_u64().unwrap()
    });
    assert_eq!(target_port, u64::from(serve_port));
    let allowed = config["serve"]["allowed_hosts"].as_array().unwrap();
    let service_name = service["metadata"]["name"].as_str().unwrap();
    for host in [service_name.to_owned(), format!("{service_name}.{namespace}.svc.cluster.local")] {
        assert!(allowed.contains(&Value::from(host.clone())), "[serve] allowed_hosts lacks {host}");
    }

    // Each disruption budget selects a Deployment of more than one replica.
    for budget in by_kind("PodDisruptionBudget") {
        let selector = budget["spec"]["selector"]["matchLabels"].as_object().unwrap();
        let selected: Vec<&Value> = by_kind("Deployment")
            .into_iter()
            .filter(|d| selector.iter().all(|(k, v)| &d["spec"]["template"]["metadata"]["labels"][k] == v))
            .collect();
        assert_eq!(selected.len(), 1, "{}", budget["metadata"]["name"]);
        assert!(selected[0]["spec"]["replicas"].as_u64().unwrap() > budget["spec"]["minAvailable"].as_u64().unwrap());
    }
}

/// A Kubernetes quantity (`500m`, `"2"`, `1Gi`, `1536Mi`) as a number.
fn quantity(value: &Value) -> f64 {
    let q = value.as_str().map(str::to_owned).unwrap_or_else(|| value.to_string());
    for (suffix, factor) in [("Gi", 1024.0 * 1024.0 * 1024.0), ("Mi", 1024.0 * 1024.0), ("Ki", 1024.0), ("m", 0.001)] {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<f64>().unwrap() * factor;
        }
    }
    q.parse().unwrap_or_else(|_| panic!("quantity {q}"))
}
