//! Property tests of what augur reads from places it does not control: an agent's
//! command line (read back from `/proc`), names in records (which become paths),
//! study records, and trial records (which anything with write access to the store,
//! a trial script with the worker role among them, can rewrite).
//! Whatever the input, nothing panics, and what is accepted is safe to use.
//!
//! `PROPTEST_CASES` raises the number of cases (default 256 per property here).

use augur_model::agent::{plain_name, Invocation};
use augur_model::{
    oracle_for, DriveSettings, Study, StudyRecord, StudyState, Trial, TrialState, Value,
};
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
        bounds: Default::default(),
        reason: None,
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

    /// Trial records as a tampered store may hold them (parameters of any name and
    /// type, metrics that are not numbers a script could print, any state): every
    /// oracle still proposes without a panic, and only points inside the space.
    #[test]
    fn oracles_propose_inside_the_space_whatever_the_history_holds(
        oracle in prop::sample::select(vec!["grid", "random", "tpe"]),
        history in prop::collection::vec(
            (
                prop::collection::btree_map(
                    prop_oneof![prop::sample::select(vec!["x", "n", "act", "lr"]).prop_map(String::from), text()],
                    prop_oneof![
                        any::<i64>().prop_map(Value::Int),
                        prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY)].prop_map(Value::Float),
                        text().prop_map(Value::Str),
                    ],
                    0..5,
                ),
                prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::NEG_INFINITY)],
                prop::sample::select(vec![TrialState::Succeeded, TrialState::Running, TrialState::Failed, TrialState::Pruned]),
            ),
            0..40,
        ),
    ) {
        let study = Study::parse(
            &format!("name='s'\nobjective={{metric='m'}}\noracle='{oracle}'\ntrials=50\n[params]\nx={{range=[0.0,1.0],steps=3}}\nn={{range=[1,5]}}\nact={{values=['relu','tanh']}}\nlr={{range=[1e-4,1e-1],scale='log',steps=3}}\n[run]\nscript='true'\n"),
            "s.toml",
            Path::new("."),
        )
        .expect("study");
        let trials: Vec<Trial> = history
            .into_iter()
            .enumerate()
            .map(|(i, (params, m, state))| {
                let mut t = Trial::new("s", i as u64 + 1, i as u64, 0, params, 0);
                t.state = state;
                t.metrics.insert("m".into(), m);
                t
            })
            .collect();
        let refs: Vec<&Trial> = trials.iter().collect();
        let o = oracle_for(&study);
        for point in [0, refs.len() as u64, refs.len() as u64 + 1] {
            if let Some(p) = o.propose(point, &refs) {
                for (k, spec) in &study.params {
                    let v = p.get(k).expect("every parameter proposed");
                    prop_assert!(spec.contains(v), "{} = {:?} outside {:?}", k, v, spec);
                }
            }
        }
    }
}
