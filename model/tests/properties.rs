//! Property tests of the two parsers that read what users and their scripts write:
//! the study file and the script's output lines. Whatever the input, they answer
//! (a study or one clear error; a classified line) and never panic; what they accept
//! is usable (an oracle proposes points inside the space).
//!
//! `PROPTEST_CASES` raises the number of cases (default 256 per property here).

use augur_model::metrics::{parse_line, parse_metrics, Line};
use augur_model::{oracle_for, Study, Trial};
use proptest::prelude::*;
use std::path::Path;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        // Failures are reported with the shrunk input; nothing is written to disk.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Characters that matter to TOML and to augur's own syntax, plus any character.
fn text() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        '=', '[', ']', '{', '}', '"', '\'', ',', '.', '\n', '#', '\\', '-', '+', 'e', '0', '9',
        ' ', '/', '$', '(', ')', '`', ';', '\0', 'é', '🦀',
    ]);
    prop::collection::vec(prop_oneof![special, any::<char>()], 0..64)
        .prop_map(|v| v.into_iter().collect())
}

/// A TOML value of any type, numbers at their extremes included.
fn value() -> impl Strategy<Value = toml::Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(toml::Value::Integer),
        prop::sample::select(vec![
            0i64,
            1,
            -1,
            2,
            64,
            65,
            1000,
            1001,
            i64::MAX,
            i64::MIN,
            4_294_967_296
        ])
        .prop_map(toml::Value::Integer),
        any::<f64>().prop_map(toml::Value::Float),
        prop::sample::select(vec![
            0.0,
            -0.0,
            1e-300,
            1e300,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY
        ])
        .prop_map(toml::Value::Float),
        any::<bool>().prop_map(toml::Value::Boolean),
        text().prop_map(toml::Value::String),
        prop::sample::select(vec![
            "grid",
            "random",
            "tpe",
            "minimize",
            "maximize",
            "log",
            "linear",
            "median",
            "asha",
            "10m",
            "0s",
            "1h",
            "-1s",
            "99999999999999h",
            "true",
            "ok",
            "",
        ])
        .prop_map(|s| toml::Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(toml::Value::Array),
            prop::collection::btree_map(key(), inner, 0..5)
                .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
        ]
    })
}

/// A short lowercase word (`[a-z][a-z0-9_./:-]{0,6}`).
fn word() -> impl Strategy<Value = String> {
    (
        prop::sample::select(('a'..='z').collect::<Vec<_>>()),
        prop::collection::vec(
            prop::sample::select(
                ('a'..='z')
                    .chain('0'..='9')
                    .chain("_./:-".chars())
                    .collect::<Vec<_>>(),
            ),
            0..7,
        ),
    )
        .prop_map(|(first, rest)| std::iter::once(first).chain(rest).collect())
}

fn section() -> impl Strategy<Value = std::collections::BTreeMap<String, toml::Value>> {
    prop::collection::btree_map(key(), value(), 0..3)
}

/// Keys the study file knows (at any level), and some it does not.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "name", "objective", "metric", "goal", "oracle", "trials", "parallel", "replicates",
            "seed", "params", "run", "script", "files", "timeout", "grace", "max_attempts",
            "max_preemptions", "retry_on_failure", "env", "preamble", "datasets", "range",
            "values", "steps", "scale", "prune", "rule", "step", "warmup", "min_trials",
            "min_step", "reduction", "aws", "instance_type", "image", "spot",
            "spot_fallback_after", "disk_gb", "imds_hop_limit", "keep_days", "x", "lr", "LR", "n",
        ])
        .prop_map(String::from),
        1 => word(),
    ]
}

/// A parameter of the right shape, with bounds, scales and steps of any value.
fn typed_param() -> impl Strategy<Value = toml::Value> {
    let table = |pairs: Vec<(&str, toml::Value)>| {
        toml::Value::Table(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    };
    let float = prop_oneof![
        -1e6f64..1e6,
        prop::sample::select(vec![
            0.0,
            1e-12,
            -1e-12,
            1e300,
            -1e300,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN
        ]),
    ];
    prop_oneof![
        (
            float.clone(),
            float,
            prop::option::of(prop::sample::select(vec!["log", "linear"])),
            prop::option::of(-2i64..30)
        )
            .prop_map(move |(a, b, scale, steps)| {
                let mut p = vec![("range", toml::Value::Array(vec![a.into(), b.into()]))];
                if let Some(sc) = scale {
                    p.push(("scale", sc.into()));
                }
                if let Some(n) = steps {
                    p.push(("steps", n.into()));
                }
                table(p)
            }),
        (
            -1000i64..1000,
            -1000i64..1000,
            prop::option::of(prop::sample::select(vec!["log", "linear"]))
        )
            .prop_map(move |(a, b, scale)| {
                let mut p = vec![("range", toml::Value::Array(vec![a.into(), b.into()]))];
                if let Some(sc) = scale {
                    p.push(("scale", sc.into()));
                }
                table(p)
            }),
        prop::collection::vec(-5i64..5, 1..5).prop_map(move |v| table(vec![(
            "values",
            toml::Value::Array(v.into_iter().map(Into::into).collect())
        )])),
        prop::collection::vec(word(), 1..5).prop_map(move |v| table(vec![(
            "values",
            toml::Value::Array(v.into_iter().map(Into::into).collect())
        )])),
    ]
}

/// A study file made of known sections with values of any type: most fail
/// validation, in every way validation can fail.
fn document() -> impl Strategy<Value = String> {
    let param = prop_oneof![
        3 => typed_param(),
        1 => (value(), value()).prop_map(|(a, b)| {
            let mut t = toml::Table::new();
            t.insert("range".into(), toml::Value::Array(vec![a, b]));
            toml::Value::Table(t)
        }),
        1 => prop::collection::vec(value(), 0..4).prop_map(|v| {
            let mut t = toml::Table::new();
            t.insert("values".into(), toml::Value::Array(v));
            toml::Value::Table(t)
        }),
        1 => value(),
    ];
    let params = prop::collection::btree_map(
        prop_oneof![3 => prop::sample::select(vec!["x", "lr", "n", "act"]).prop_map(String::from), 1 => key()],
        param,
        0..4,
    );
    (
        prop::option::of(text()),
        section(),
        params,
        section(),
        prop::option::weighted(0.2, section()),
        prop::option::weighted(0.2, section()),
        prop::bool::weighted(0.7),
    )
        .prop_map(|(name, top, params, run, prune, aws, good_core)| {
            let mut doc = toml::Table::new();
            if good_core {
                doc.insert("name".into(), toml::Value::String("fuzz".into()));
                let mut o = toml::Table::new();
                o.insert("metric".into(), toml::Value::String("loss".into()));
                doc.insert("objective".into(), toml::Value::Table(o));
                doc.insert("trials".into(), toml::Value::Integer(3));
            } else if let Some(n) = name {
                doc.insert("name".into(), toml::Value::String(n));
            }
            for (k, v) in top {
                doc.insert(k, v);
            }
            doc.insert(
                "params".into(),
                toml::Value::Table(params.into_iter().collect()),
            );
            let mut run: toml::Table = run.into_iter().collect();
            if good_core {
                run.entry("script")
                    .or_insert_with(|| toml::Value::String("true".into()));
            }
            doc.insert("run".into(), toml::Value::Table(run));
            if let Some(p) = prune {
                doc.insert("prune".into(), toml::Value::Table(p.into_iter().collect()));
            }
            if let Some(a) = aws {
                doc.insert("aws".into(), toml::Value::Table(a.into_iter().collect()));
            }
            toml::to_string(&doc).unwrap_or_default()
        })
}

/// What every accepted study must satisfy, and an oracle that proposes inside it.
fn check_accepted(s: &Study) {
    assert!(s.trials >= 1 && s.parallel >= 1 && s.replicates >= 1);
    assert!((1..=1000).contains(&s.run.max_attempts));
    assert!(augur_model::valid_study_name(&s.name));
    let oracle = oracle_for(s);
    let history: Vec<&Trial> = Vec::new();
    for point in 0..3 {
        let Some(p) = oracle.propose(point, &history) else {
            break;
        };
        for (k, spec) in &s.params {
            let v = p.get(k).expect("every parameter proposed");
            assert!(spec.contains(v), "{k} = {v:?} outside {spec:?}");
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_is_a_study_or_one_error(s in text()) {
        if let Ok(study) = Study::parse(&s, "fuzz.toml", Path::new(".")) {
            check_accepted(&study);
        }
    }

    #[test]
    fn any_document_is_a_study_or_one_error(doc in document()) {
        match Study::parse(&doc, "fuzz.toml", Path::new(".")) {
            Ok(study) => check_accepted(&study),
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.starts_with("fuzz.toml"), "names the file: {msg}");
                prop_assert!(!msg.trim().is_empty());
            }
        }
    }

    #[test]
    fn any_space_that_validates_is_sampled_inside_by_every_oracle(
        params in prop::collection::btree_map(
            prop::sample::select(vec!["x", "lr", "n", "act", "w"]).prop_map(String::from),
            typed_param(),
            1..5,
        ),
        oracle in prop::sample::select(vec!["grid", "random", "tpe"]),
        trials in 1i64..50,
    ) {
        let mut doc = toml::Table::new();
        doc.insert("name".into(), "space".into());
        let mut o = toml::Table::new();
        o.insert("metric".into(), "loss".into());
        doc.insert("objective".into(), toml::Value::Table(o));
        doc.insert("oracle".into(), oracle.into());
        doc.insert("trials".into(), trials.into());
        doc.insert("params".into(), toml::Value::Table(params.into_iter().collect()));
        let mut run = toml::Table::new();
        run.insert("script".into(), "true".into());
        doc.insert("run".into(), toml::Value::Table(run));
        let text = toml::to_string(&doc).unwrap_or_default();
        match Study::parse(&text, "fuzz.toml", Path::new(".")) {
            Ok(study) => check_accepted(&study),
            Err(e) => prop_assert!(e.to_string().starts_with("fuzz.toml"), "{e}"),
        }
    }

    #[test]
    fn an_edited_valid_study_is_a_study_or_one_error(
        at in 0usize..400,
        len in 0usize..20,
        insert in text(),
    ) {
        let base = "name = 'edit'\nobjective = { metric = 'loss', goal = 'minimize' }\n\
oracle = 'tpe'\ntrials = 20\nparallel = 4\n[params]\nx = { range = [-5.0, 5.0] }\n\
lr = { range = [1e-4, 1e-1], scale = 'log' }\nact = { values = ['relu', 'tanh'] }\n\
n = { range = [1, 10] }\n[run]\nscript = 'python3 train.py'\ntimeout = '10m'\n\
max_attempts = 3\n[prune]\nrule = 'asha'\nmin_step = 1\nreduction = 3\n";
        let chars: Vec<char> = base.chars().collect();
        let at = at.min(chars.len());
        let end = (at + len).min(chars.len());
        let edited: String = chars[..at]
            .iter()
            .chain(insert.chars().collect::<Vec<_>>().iter())
            .chain(chars[end..].iter())
            .collect();
        if let Ok(study) = Study::parse(&edited, "fuzz.toml", Path::new(".")) {
            check_accepted(&study);
        }
    }

    #[test]
    fn any_output_line_is_classified(line in text()) {
        let _ = parse_line(&line);
        let _ = parse_line(&format!("METRICS: {line}"));
        let _ = parse_line(&format!("AUGUR: keepalive={line}"));
        let _ = parse_line(&format!("DIVINER: {line}"));
    }

    #[test]
    fn metrics_lines_keep_finite_values_and_refuse_the_rest(
        pairs in prop::collection::vec(
            (
                prop_oneof![word(), text()],
                prop_oneof![
                    any::<f64>().prop_map(|v| v.to_string()),
                    any::<i64>().prop_map(|v| v.to_string()),
                    prop::sample::select(vec!["1e309", "-1e309", "nan", "inf", "-0", "0x10", "1_000", "", " 3 ", "1e-400"])
                        .prop_map(String::from),
                    text(),
                ],
            ),
            1..5,
        )
    ) {
        let line = pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ");
        match parse_line(&format!("METRICS: {line}")) {
            Line::Metrics(m) => {
                prop_assert!(!m.is_empty());
                prop_assert!(m.values().all(|v| v.is_finite()), "{m:?}");
                // What was accepted reads back the same.
                let again = parse_metrics(&line);
                prop_assert_eq!(again.as_ref(), Ok(&m));
            }
            Line::BadMetrics(e) => prop_assert!(!e.is_empty()),
            other => prop_assert!(false, "a METRICS line is metrics: {other:?}"),
        }
    }
}

/// The inputs that once broke the parsers, kept as plain tests.
#[test]
fn a_log_grid_stays_inside_its_bounds() {
    // exp(ln(976235.9156008143)) is 976235.9156008137: the first point fell below lo.
    let text = "name='g'\nobjective={metric='m'}\noracle='grid'\n[params]\nn={range=[976235.9156008143, 1e300], scale='log', steps=12}\n[run]\nscript='true'\n";
    let s = Study::parse(text, "f.toml", Path::new(".")).expect("valid");
    check_accepted(&s);
    let all = s.params["n"].grid_values().expect("grid");
    assert!(all.iter().all(|v| s.params["n"].contains(v)), "{all:?}");
}

#[test]
fn counts_beyond_u32_are_refused_not_truncated() {
    for (key, v) in [
        ("max_attempts", "4294967296"),
        ("max_attempts", "4294967297"),
        ("max_preemptions", "-1"),
    ] {
        let text = format!(
            "name='b'\nobjective={{metric='m'}}\ntrials=2\n[run]\nscript='true'\n{key}={v}\n"
        );
        let e = Study::parse(&text, "f.toml", Path::new(".")).expect_err(key);
        assert!(e.to_string().contains(key), "{e}");
    }
}
