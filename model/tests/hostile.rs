//! Property tests of what augur reads from places it does not control: an agent's
//! command line (read back from `/proc`), names in records (which become paths), and
//! study records (which anything with write access to the store can rewrite).
//! Whatever the input, nothing panics, and what is accepted is safe to use.
//!
//! `PROPTEST_CASES` raises the number of cases (default 256 per property here).

use augur_model::agent::{plain_name, Invocation};
use augur_model::{DriveSettings, Study, StudyRecord, StudyState};
use proptest::prelude::*;
use std::path::{Component, Path};

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text rich in what paths, shells and flags care about.
fn text() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        '/', '.', '-', '\\', '\0', '\n', '\'', '"', '$', ' ', '=', 'é', '🦀',
    ]);
    prop::collection::vec(
        prop_oneof![3 => special, 3 => proptest::char::range('a', 'z'), 1 => any::<char>()],
        0..16,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

/// Argument vectors: known flags, values and noise.
fn args() -> impl Strategy<Value = Vec<String>> {
    let flag = prop::sample::select(vec![
        "--home",
        "--backend",
        "--table",
        "--bucket",
        "--log-group-prefix",
        "--study",
        "--trial",
        "--attempt",
        "--heartbeat",
        "--machine",
        "--shutdown",
        "--",
        "-x",
    ])
    .prop_map(String::from);
    let value = prop_oneof![
        text(),
        prop::sample::select(vec![
            "aws",
            "local",
            "1",
            "0",
            "2s",
            "250ms",
            "-1",
            "99999999999999999999"
        ])
        .prop_map(String::from),
    ];
    prop::collection::vec(prop_oneof![flag, value], 0..14)
}

fn record() -> StudyRecord {
    let spec = Study::parse(
        "name='s'\nobjective={metric='m'}\ntrials=4\n[params]\nx={range=[0.0,1.0]}\n[run]\nscript='true'\n[aws]\ninstance_type='t3.micro'\n",
        "s.toml",
        Path::new("."),
    )
    .expect("study");
    StudyRecord {
        name: "s".into(),
        spec,
        state: StudyState::Active,
        created_ms: 1,
        updated_ms: 1,
        drive: Some(DriveSettings::cloud()),
    }
}

proptest! {
    #![proptest_config(config())]

    /// Any command line: parsed or refused, never a panic; what parses is written
    /// back to the same arguments' meaning.
    #[test]
    fn command_lines_parse_or_are_refused(a in args()) {
        if let Some(inv) = Invocation::parse(&a) {
            prop_assert_eq!(Invocation::parse(&inv.to_args()), Some(inv));
        }
    }

    /// A name accepted as plain stays one step inside its directory.
    #[test]
    fn plain_names_never_leave_their_directory(name in text()) {
        if plain_name(&name) {
            let p = Path::new("/base").join(&name);
            let inside: Vec<Component> = p.strip_prefix("/base").expect("under").components().collect();
            prop_assert_eq!(inside.len(), 1, "{:?}", name);
            prop_assert!(matches!(inside[0], Component::Normal(_)), "{:?}", name);
        }
    }

    /// A record with any run.files, env name, instance type or region: checked
    /// without a panic, and accepted only if its files stay in the study's
    /// directory and its AWS names hold no shell or path text.
    #[test]
    fn records_are_accepted_only_when_safe(
        file in text(), env in text(), itype in text(), region in text(),
    ) {
        let mut r = record();
        r.spec.run.files = vec![file.clone()];
        r.spec.run.env.insert(env.clone(), "v".into());
        let aws = r.spec.aws.as_mut().expect("aws");
        aws.instance_type = Some(itype.clone());
        aws.region = Some(region.clone());
        if r.check().is_ok() {
            prop_assert!(!file.starts_with('/') && !file.split('/').any(|p| p == ".." || p.is_empty()), "{:?}", file);
            prop_assert!(!env.starts_with("AUGUR_") && !env.is_empty(), "{:?}", env);
            for v in [&itype, &region] {
                prop_assert!(v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'), "{:?}", v);
            }
        }
    }
}
