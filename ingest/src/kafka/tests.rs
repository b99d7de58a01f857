use std::ffi::OsString;

use rdkafka::consumer::BaseConsumer;

use super::*;

const SECRET: &str = "hunter2-s3cr3t";

fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    pairs.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))).collect()
}

fn props(pairs: &[(&str, &str)]) -> Properties {
    let mut properties = Properties::default();
    for (key, value) in pairs {
        properties.set(*key, *value);
    }
    properties
}

#[test]
fn secrets_are_the_keys_that_hold_credentials() {
    for key in [
        "sasl.password",
        "ssl.key.password",
        "ssl.keystore.password",
        "ssl.key.pem",
        "ssl_key",
        "sasl.jaas.config",
        "sasl.oauthbearer.config",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.client.credentials.client.secret",
        "sasl.oauthbearer.assertion.private.key.pem",
        "sasl.oauthbearer.assertion.private.key.passphrase",
        "SASL.PASSWORD",
    ] {
        assert!(is_secret(key), "{key} is a secret");
    }
    for key in [
        "bootstrap.servers",
        "security.protocol",
        "sasl.mechanism",
        "sasl.username",
        "ssl.ca.location",
        "ssl.certificate.location",
        "ssl.key.location",
        "sasl.oauthbearer.token.endpoint.url",
        "session.timeout.ms",
    ] {
        assert!(!is_secret(key), "{key} is not a secret");
    }
}

#[test]
fn a_properties_file_is_key_value_lines_with_comments() {
    let text = "# Confluent Cloud\n\
                bootstrap.servers=pkc-1.example.com:9092\n\
                \n\
                ! a Java-style comment\n  \
                security.protocol = SASL_SSL  \n\
                sasl.password=a=b==\n\
                security.protocol=SSL\n";
    let parsed = Properties::parse_file(text, "client.properties").unwrap();
    assert_eq!(
        parsed,
        props(&[
            ("bootstrap.servers", "pkc-1.example.com:9092"),
            ("security.protocol", "SSL"),
            ("sasl.password", "a=b==")
        ])
    );
}

#[test]
fn malformed_lines_are_named_by_place_never_quoted() {
    for (text, line) in
        [(format!("a=1\n{SECRET}\n"), 2), (format!("=just{SECRET}"), 1), (format!("two words={SECRET}"), 1)]
    {
        let err = Properties::parse_file(&text, "c.properties").unwrap_err();
        assert_eq!(err, PropertyError::Malformed { origin: format!("c.properties:{line}") });
        assert!(!err.to_string().contains(SECRET), "{err}");
    }
    let err = Properties::parse_flags(&[format!("sasl.password:{SECRET}")]).unwrap_err();
    assert!(err.to_string().contains("--kafka-property") && !err.to_string().contains(SECRET), "{err}");
    assert_eq!(Properties::parse_flags(&[" a = 1 ", "a=2"]).unwrap(), props(&[("a", "2")]));
}

#[test]
fn environment_variables_name_properties() {
    let parsed = Properties::from_env(env(&[
        ("TESTLAKE_KAFKA_SASL_PASSWORD", SECRET),
        ("TESTLAKE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
        ("TESTLAKE_KAFKA_LOG__LEVEL", "7"),
        ("TESTLAKE_KAFKA_PROPERTIES", "/etc/testlake/kafka.properties"),
        ("TESTLAKE_BROKERS", "elsewhere:9092"),
        ("KAFKA_SASL_USERNAME", "not ours"),
    ]))
    .unwrap();
    assert_eq!(parsed, props(&[("sasl.password", SECRET), ("security.protocol", "SASL_SSL"), ("log_level", "7")]));
    assert_eq!(
        Properties::from_env(env(&[("TESTLAKE_KAFKA_", "x")])).unwrap_err(),
        PropertyError::Malformed { origin: "TESTLAKE_KAFKA_".into() }
    );
}

#[cfg(unix)]
#[test]
fn a_variable_that_is_not_utf8_is_an_error_naming_it() {
    use std::os::unix::ffi::OsStringExt;
    let vars = vec![(OsString::from("TESTLAKE_KAFKA_SASL_PASSWORD"), OsString::from_vec(vec![0xff, b'x']))];
    let err = Properties::from_env(vars).unwrap_err();
    assert_eq!(err.to_string(), "TESTLAKE_KAFKA_SASL_PASSWORD is not valid UTF-8");
    // A variable that is not ours is not looked at, whatever its bytes.
    let vars = vec![(OsString::from_vec(vec![0xff]), OsString::from_vec(vec![0xff]))];
    assert!(Properties::from_env(vars).unwrap().is_empty());
}

#[test]
fn flags_win_over_the_environment_which_wins_over_the_file() {
    let file = props(&[("security.protocol", "SSL"), ("sasl.username", "file"), ("client.id", "file")]);
    let env = props(&[("sasl.username", "env"), ("client.id", "env")]);
    let flags = props(&[("client.id", "flag")]);
    let config = KafkaConfig::from_sources(
        None,
        [("file".to_owned(), file), ("env".to_owned(), env), ("flags".to_owned(), flags)],
    )
    .unwrap();
    assert_eq!(config.brokers, DEFAULT_BROKERS);
    assert_eq!(
        config.properties,
        props(&[("security.protocol", "SSL"), ("sasl.username", "env"), ("client.id", "flag")])
    );
}

#[test]
fn brokers_come_from_the_flag_then_the_properties_then_the_default() {
    let with_servers = || [("file".to_owned(), props(&[("bootstrap.servers", "from-file:9092")]))];
    let config = KafkaConfig::from_sources(Some("from-flag:9092"), with_servers()).unwrap();
    assert_eq!(config.brokers, "from-flag:9092");
    assert!(config.properties.is_empty(), "bootstrap.servers is not applied twice");
    assert_eq!(KafkaConfig::from_sources(None, with_servers()).unwrap().brokers, "from-file:9092");
    assert_eq!(KafkaConfig::from_sources(None, []).unwrap(), KafkaConfig::default());
}

#[test]
fn a_group_id_is_refused_with_what_to_use_instead() {
    let err =
        KafkaConfig::from_sources(None, [("k.properties:3".to_owned(), props(&[("group.id", "g")]))]).unwrap_err();
    assert!(
        err.to_string().starts_with("k.properties:3: group.id is set by testlake")
            && err.to_string().contains("--group"),
        "{err}"
    );
}

#[test]
fn a_java_jaas_line_becomes_username_and_password() {
    for jaas in [
        format!(
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="alice" password="{SECRET}";"#
        ),
        format!(
            "org.apache.kafka.common.security.scram.ScramLoginModule required\tusername='alice'  password={SECRET} ;"
        ),
    ] {
        let config =
            KafkaConfig::from_sources(None, [("file".to_owned(), props(&[("sasl.jaas.config", &jaas)]))]).unwrap();
        assert_eq!(config.properties, props(&[("sasl.username", "alice"), ("sasl.password", SECRET)]), "{jaas}");
    }
    // Set explicitly, sasl.username stays.
    let jaas = r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="a" password="p";"#;
    let config = KafkaConfig::from_sources(
        None,
        [
            ("f".to_owned(), props(&[("sasl.jaas.config", jaas)])),
            ("flags".to_owned(), props(&[("sasl.username", "bob")])),
        ],
    )
    .unwrap();
    assert_eq!(config.properties, props(&[("sasl.username", "bob"), ("sasl.password", "p")]));
    for jaas in [
        format!("org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required token={SECRET};"),
        format!(r#"org.apache.kafka.common.security.plain.PlainLoginModule required password="{SECRET}";"#),
        format!(r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="a" password="{SECRET};"#),
    ] {
        let err =
            KafkaConfig::from_sources(None, [("f".to_owned(), props(&[("sasl.jaas.config", &jaas)]))]).unwrap_err();
        assert_eq!(err, PropertyError::Jaas);
        assert!(!err.to_string().contains(SECRET));
    }
}

#[test]
fn debug_and_display_hide_secrets() {
    let mut config = KafkaConfig::new("b:9092");
    config.properties.set("sasl.password", SECRET).set("sasl.jaas.config", SECRET).set("sasl.username", "alice");
    for shown in [format!("{config:?}"), format!("{config:#?}"), config.properties.to_string()] {
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(shown.contains(HIDDEN) && shown.contains("alice"), "{shown}");
    }
    assert_eq!(config.properties.to_string(), "sasl.jaas.config=[hidden] sasl.password=[hidden] sasl.username=alice");
}

#[test]
fn shared_properties_override_a_clients_own() {
    let mut config = KafkaConfig::new("b:9092");
    config.properties.set("linger.ms", "50");
    let client = config.client(&[("linger.ms", "5"), ("acks", "all")]);
    assert_eq!(client.get("bootstrap.servers"), Some("b:9092"));
    assert_eq!(client.get("linger.ms"), Some("50"));
    assert_eq!(client.get("acks"), Some("all"));
}

#[test]
fn librdkafka_errors_about_secret_properties_are_masked() {
    // librdkafka refuses an unknown property quoting its value; a name that looks secret is
    // masked, others are left as they are.
    let mut config = KafkaConfig::new("127.0.0.1:1");
    config.properties.set("sasl.password.typo", SECRET);
    let err = config.create::<BaseConsumer>(&[]).err().expect("an unknown property is refused");
    assert!(err.to_string().contains("sasl.password.typo") && !err.to_string().contains(SECRET), "{err}");
    let mut config = KafkaConfig::new("127.0.0.1:1");
    config.properties.set("session.timeout.ms", "soon");
    let err = config.create::<BaseConsumer>(&[]).err().expect("a bad value is refused");
    assert!(err.to_string().contains("soon"), "{err}");
}
